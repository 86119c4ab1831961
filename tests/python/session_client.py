"""A Python gRPC client for the session service, generated from proto/ with grpcio-tools.

usage: session_client.py <generated-dir> <host:port>
Creates a session as alice, reads it back, checks that bob cannot see it, lists by metadata and
deletes it. Prints OK on success; any failure raises.
"""
import sys

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
from cognition.session.v1 import session_pb2, session_pb2_grpc  # noqa: E402

target = sys.argv[2]
alice = (("x-cognition-scope-user", "alice"),)
bob = (("x-cognition-scope-user", "bob"),)

with grpc.insecure_channel(target) as channel:
    stub = session_pb2_grpc.SessionServiceStub(channel)
    created = stub.CreateSession(
        session_pb2.CreateSessionRequest(title="from python", metadata={"lang": "py"}),
        metadata=alice,
    ).session
    assert created.id, created
    assert created.agent_name == "default", created.agent_name
    assert created.status == session_pb2.SESSION_STATUS_ACTIVE, created.status

    got = stub.GetSession(session_pb2.GetSessionRequest(session_id=created.id), metadata=alice).session
    assert got.title == "from python" and got.metadata["lang"] == "py", got
    assert got.scopes["user"] == "alice", got.scopes

    try:
        stub.GetSession(session_pb2.GetSessionRequest(session_id=created.id), metadata=bob)
        raise AssertionError("bob must not see alice's session")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()
        codes = dict(e.trailing_metadata() or ())
        assert codes.get("x-cognition-error-code") == "SESSION_NOT_FOUND", codes

    try:
        stub.GetSession(session_pb2.GetSessionRequest(session_id=created.id))
        raise AssertionError("a call without scope must be refused")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED, e.code()

    listed = stub.ListSessions(
        session_pb2.ListSessionsRequest(metadata_filter={"lang": "py"}), metadata=alice
    )
    assert [s.id for s in listed.sessions] == [created.id], listed
    assert listed.total == 1, listed.total

    stub.DeleteSession(session_pb2.DeleteSessionRequest(session_id=created.id), metadata=alice)
print("OK")
