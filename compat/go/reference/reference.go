// Package reference starts, waits for and stops Apache Kafka 4.4 beside Fjord from Go tests,
// one call each, through compat/reference/kafka.sh (which resolves Kafka from Maven Central).
package reference

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// Kafka is a running KRaft cluster of combined broker+controller nodes.
type Kafka struct {
	Dir       string
	Bootstrap string // host:port[,host:port...]
}

func script() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "reference", "kafka.sh")
}

// Start formats and starts nodes nodes in dir (a fresh directory) and returns once every
// node serves.
func Start(dir string, nodes int) (*Kafka, error) {
	cmd := exec.Command(script(), "start", dir, "--nodes", strconv.Itoa(nodes))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("reference Kafka did not start: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return &Kafka{Dir: dir, Bootstrap: lines[len(lines)-1]}, nil
}

// Wait returns once every node serves again, or an error after seconds.
func (k *Kafka) Wait(seconds int) error {
	out, err := exec.Command(script(), "wait", k.Dir, strconv.Itoa(seconds)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("reference Kafka not ready: %v\n%s", err, out)
	}
	return nil
}

// Stop stops every node (SIGTERM, then SIGKILL after 20 s).
func (k *Kafka) Stop() error {
	out, err := exec.Command(script(), "stop", k.Dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("stopping reference Kafka: %v\n%s", err, out)
	}
	return nil
}
