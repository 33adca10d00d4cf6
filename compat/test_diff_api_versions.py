"""Differential: the APIs and versions each broker advertises. Every API whose range differs
is listed in docs/compatibility.md ("APIs"), so the document cannot fall behind the code."""

import os
import re
import socket
import struct

import pytest

from diff import compare

# Kafka 4.4's API keys by number (the protocol guide's names).
NAMES = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 8: "OffsetCommit",
    9: "OffsetFetch", 10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat",
    13: "LeaveGroup", 14: "SyncGroup", 15: "DescribeGroups", 16: "ListGroups",
    17: "SaslHandshake", 18: "ApiVersions", 19: "CreateTopics", 20: "DeleteTopics",
    21: "DeleteRecords", 22: "InitProducerId", 23: "OffsetForLeaderEpoch",
    24: "AddPartitionsToTxn", 25: "AddOffsetsToTxn", 26: "EndTxn", 27: "WriteTxnMarkers",
    28: "TxnOffsetCommit", 29: "DescribeAcls", 30: "CreateAcls", 31: "DeleteAcls",
    32: "DescribeConfigs", 33: "AlterConfigs", 34: "AlterReplicaLogDirs",
    35: "DescribeLogDirs", 36: "SaslAuthenticate", 37: "CreatePartitions",
    38: "CreateDelegationToken", 39: "RenewDelegationToken", 40: "ExpireDelegationToken",
    41: "DescribeDelegationToken", 42: "DeleteGroups", 43: "ElectLeaders",
    44: "IncrementalAlterConfigs", 45: "AlterPartitionReassignments",
    46: "ListPartitionReassignments", 47: "OffsetDelete", 48: "DescribeClientQuotas",
    49: "AlterClientQuotas", 50: "DescribeUserScramCredentials",
    51: "AlterUserScramCredentials", 55: "DescribeQuorum", 57: "UpdateFeatures",
    60: "DescribeCluster", 61: "DescribeProducers", 64: "UnregisterBroker",
    65: "DescribeTransactions", 66: "ListTransactions", 68: "ConsumerGroupHeartbeat",
    69: "ConsumerGroupDescribe", 71: "GetTelemetrySubscriptions", 72: "PushTelemetry",
    74: "ListConfigResources", 75: "DescribeTopicPartitions", 76: "ShareGroupHeartbeat",
    77: "ShareGroupDescribe", 78: "ShareFetch", 79: "ShareAcknowledge",
    80: "AddRaftVoter", 81: "RemoveRaftVoter", 83: "InitializeShareGroupState",
    84: "ReadShareGroupState", 85: "WriteShareGroupState", 86: "DeleteShareGroupState",
    87: "ReadShareGroupStateSummary", 88: "StreamsGroupHeartbeat",
    89: "StreamsGroupDescribe", 90: "DescribeShareGroupOffsets",
    91: "AlterShareGroupOffsets", 92: "DeleteShareGroupOffsets",
    93: "StreamsGroupTopologyDescriptionUpdate", 94: "UnregisterController",
}

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "compatibility.md")


def api_versions(t):
    """ApiVersions v0 on a raw socket: {key: (min, max)}."""
    host, port = t.bootstrap.split(",")[0].rsplit(":", 1)
    client_id = b"diff"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(struct.pack(">i", len(body)) + body)

        def read(n):
            data = b""
            while len(data) < n:
                chunk = s.recv(n - len(data))
                assert chunk, "connection closed"
                data += chunk
            return data

        data = read(struct.unpack(">i", read(4))[0])
    _, error, count = struct.unpack(">ihi", data[:10])
    assert error == 0
    return {k: (lo, hi) for k, lo, hi in
            (struct.unpack(">hhh", data[10 + 6 * i:16 + 6 * i]) for i in range(count))}


def documented():
    """The rows of docs/compatibility.md's API table: {name: (kafka, fjord)} as written."""
    rows = {}
    with open(DOC) as f:
        for line in f:
            m = re.match(r"\| (\w+) \((\d+)\) \| ([^|]+) \| ([^|]+) \|", line)
            if m:
                rows[int(m.group(2))] = (m.group(3).strip(), m.group(4).strip())
    return rows


def span(r):
    return "—" if r is None else f"{r[0]}–{r[1]}"


@pytest.mark.compat("raw protocol", "ApiVersions: APIs and versions advertised")
def test_every_api_difference_is_documented(both):
    kafka, fjord = both
    k, f = api_versions(kafka), api_versions(fjord)
    differing = {key: (span(k.get(key)), span(f.get(key)))
                 for key in set(k) | set(f) if k.get(key) != f.get(key)}
    doc = documented()
    missing = {NAMES.get(key, key): v for key, v in differing.items() if doc.get(key) != v}
    assert not missing, (
        "docs/compatibility.md's API table must list (name (key) | Kafka | Fjord):\n"
        + "\n".join(f"| {n} | {kv} | {fv} |" for n, (kv, fv) in sorted(missing.items(), key=str)))
    stale = sorted(NAMES.get(key, key) for key in doc if key not in differing)
    assert not stale, f"docs/compatibility.md lists APIs that no longer differ: {stale}"
    # Every API both advertise shares Kafka's lowest version.
    compare(both, lambda t: {NAMES.get(key, key): v[0] for key, v in api_versions(t).items()
                             if key in k and key in f})
