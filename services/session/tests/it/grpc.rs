//! The gRPC service on a real tonic server (127.0.0.1:0) over SQLite in a temp dir, called
//! through the generated client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use cognition_proto::common::v1::StringMap;
use cognition_proto::session::v1 as pb;
use cognition_proto::session::v1::session_service_client::SessionServiceClient;
use cognition_session::domain::{NewMessage, Role, ToolCall};
use cognition_session::event::{EventKind, RunStatus};
use cognition_session::{Config, EventLog, serve, store};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use uuid::Uuid;

use super::fake_executor::FakeExecutor;

/// Bound on waiting for one stream item, so that a broken stream fails instead of hanging.
const STEP: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    events: EventLog,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), cognition_session::Error>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(adjust: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::embedded(dir.path().join("data"));
        adjust(&mut config);
        let events = EventLog::new(store::open(&config).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (events, shutdown) = (events.clone(), shutdown.clone());
            async move { serve(&config, events, listener, shutdown).await }
        });
        Server {
            addr,
            events,
            shutdown,
            task,
            _dir: dir,
        }
    }

    async fn client(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(STEP, self.task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }
}

fn scoped<T>(message: T, user: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(user) = user {
        request
            .metadata_mut()
            .insert("x-cognition-scope-user", user.parse().unwrap());
    }
    request
}

#[track_caller]
fn assert_error(status: &Status, grpc: Code, code: &str) {
    assert_eq!(status.code(), grpc, "{status:?}");
    let got = status
        .metadata()
        .get("x-cognition-error-code")
        .and_then(|v| v.to_str().ok());
    assert_eq!(got, Some(code), "{status:?}");
}

async fn create(client: &mut SessionServiceClient<Channel>, user: Option<&str>) -> pb::Session {
    let req = pb::CreateSessionRequest {
        title: Some("t".into()),
        ..Default::default()
    };
    client
        .create_session(scoped(req, user))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
}

fn get(id: &str) -> pb::GetSessionRequest {
    pb::GetSessionRequest {
        session_id: id.to_owned(),
    }
}

#[tokio::test]
async fn session_crud() {
    let server = Server::start(|_| {}).await;
    let mut client = server.client().await;

    let req = pb::CreateSessionRequest {
        title: Some("hello".into()),
        agent_name: None,
        metadata: HashMap::from([("project".to_string(), "x".to_string())]),
    };
    let s = client
        .create_session(req)
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(s.title, "hello");
    assert_eq!(s.agent_name, "default");
    assert_eq!(s.status, pb::SessionStatus::Active as i32);
    assert!(Uuid::try_parse(&s.thread_id).is_ok());
    assert_ne!(s.thread_id, s.id);
    assert!(s.created_at.is_some() && s.updated_at.is_some());
    assert_eq!(s.metadata.get("project").map(String::as_str), Some("x"));

    let got = client
        .get_session(get(&s.id))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(got, s);

    let update = pb::UpdateSessionRequest {
        session_id: s.id.clone(),
        title: Some("renamed".into()),
        agent_name: Some("readonly".into()),
        metadata: Some(StringMap {
            entries: HashMap::from([("team".into(), "y".into())]),
        }),
        config: Some(pb::SessionConfig {
            provider: Some("openai".into()),
            model: Some("gpt-4o".into()),
            temperature: Some(0.3),
            ..Default::default()
        }),
    };
    let u = client
        .update_session(update)
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(
        (u.title.as_str(), u.agent_name.as_str()),
        ("renamed", "readonly")
    );
    assert_eq!(u.metadata, HashMap::from([("team".into(), "y".into())]));
    let config = u.config.unwrap();
    assert_eq!(
        (config.model.as_deref(), config.temperature),
        (Some("gpt-4o"), Some(0.3))
    );

    // Absent fields are left alone.
    let title_only = pb::UpdateSessionRequest {
        session_id: s.id.clone(),
        title: Some("again".into()),
        ..Default::default()
    };
    let u = client
        .update_session(title_only)
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(u.metadata.get("team").map(String::as_str), Some("y"));
    assert_eq!(u.config.unwrap().model.as_deref(), Some("gpt-4o"));

    let list = client
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total, 1);
    assert_eq!(list.sessions[0].title, "again");
    assert_eq!(list.next_cursor, "");

    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: s.id.clone(),
        })
        .await
        .unwrap();
    let gone = client.get_session(get(&s.id)).await.unwrap_err();
    assert_error(&gone, Code::NotFound, "SESSION_NOT_FOUND");
    let again = client
        .delete_session(pb::DeleteSessionRequest {
            session_id: s.id.clone(),
        })
        .await;
    assert_error(&again.unwrap_err(), Code::NotFound, "SESSION_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn list_pages_with_cursors_and_filters() {
    let server = Server::start(|_| {}).await;
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let req = pb::CreateSessionRequest {
            metadata: HashMap::from([("parity".to_string(), (i % 2).to_string())]),
            ..Default::default()
        };
        ids.push(
            client
                .create_session(req)
                .await
                .unwrap()
                .into_inner()
                .session
                .unwrap()
                .id,
        );
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let req = pb::ListSessionsRequest {
            limit: 2,
            cursor: cursor.clone(),
            ..Default::default()
        };
        let page = client.list_sessions(req).await.unwrap().into_inner();
        assert_eq!(page.total, 5);
        seen.extend(page.sessions.into_iter().map(|s| s.id));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    ids.reverse();
    assert_eq!(seen, ids, "every session once, newest first");

    let req = pb::ListSessionsRequest {
        metadata_filter: HashMap::from([("parity".to_string(), "0".to_string())]),
        ..Default::default()
    };
    let page = client.list_sessions(req).await.unwrap().into_inner();
    assert_eq!((page.total, page.sessions.len()), (3, 3));
    server.stop().await;
}

#[tokio::test]
async fn validation_errors_carry_code_and_field() {
    let server = Server::start(|_| {}).await;
    let mut client = server.client().await;
    let s = create(&mut client, None).await;

    let long = pb::CreateSessionRequest {
        title: Some("x".repeat(201)),
        ..Default::default()
    };
    let e = client.create_session(long).await.unwrap_err();
    assert_error(&e, Code::InvalidArgument, "VALIDATION_ERROR");
    assert!(e.message().contains("title"), "{e:?}");

    let agent = pb::CreateSessionRequest {
        agent_name: Some("ghost".into()),
        ..Default::default()
    };
    let e = client.create_session(agent).await.unwrap_err();
    assert_error(&e, Code::InvalidArgument, "VALIDATION_ERROR");
    assert!(e.message().contains("unknown agent"), "{e:?}");

    let big = pb::CreateSessionRequest {
        metadata: HashMap::from([("k".to_string(), "v".repeat(1025))]),
        ..Default::default()
    };
    assert_error(
        &client.create_session(big).await.unwrap_err(),
        Code::InvalidArgument,
        "VALIDATION_ERROR",
    );

    let e = client.get_session(get("not-a-uuid")).await.unwrap_err();
    assert_error(&e, Code::InvalidArgument, "VALIDATION_ERROR");
    assert_eq!(e.message(), "session_id must be a UUID");
    let e = client
        .get_session(get(&Uuid::new_v4().to_string()))
        .await
        .unwrap_err();
    assert_error(&e, Code::NotFound, "SESSION_NOT_FOUND");

    let configs = [
        pb::SessionConfig {
            temperature: Some(2.1),
            ..Default::default()
        },
        pb::SessionConfig {
            max_tokens: Some(0),
            ..Default::default()
        },
        pb::SessionConfig {
            recursion_limit: Some(0),
            ..Default::default()
        },
        pb::SessionConfig {
            provider: Some("openai".into()),
            ..Default::default()
        },
    ];
    for config in configs {
        let req = pb::UpdateSessionRequest {
            session_id: s.id.clone(),
            config: Some(config.clone()),
            ..Default::default()
        };
        let e = client.update_session(req).await.unwrap_err();
        assert_error(&e, Code::InvalidArgument, "VALIDATION_ERROR");
        assert!(e.message().contains("config."), "{config:?}: {e:?}");
    }
    let bad_agent = pb::UpdateSessionRequest {
        session_id: s.id.clone(),
        agent_name: Some("ghost".into()),
        ..Default::default()
    };
    assert_error(
        &client.update_session(bad_agent).await.unwrap_err(),
        Code::InvalidArgument,
        "VALIDATION_ERROR",
    );
    // Nothing was half-applied.
    let unchanged = client
        .get_session(get(&s.id))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(unchanged, s);

    let too_many = pb::ListSessionsRequest {
        limit: 1001,
        ..Default::default()
    };
    assert_error(
        &client.list_sessions(too_many).await.unwrap_err(),
        Code::InvalidArgument,
        "VALIDATION_ERROR",
    );
    let bad_cursor = pb::ListSessionsRequest {
        cursor: "garbage".into(),
        ..Default::default()
    };
    let e = client.list_sessions(bad_cursor).await.unwrap_err();
    assert_error(&e, Code::InvalidArgument, "VALIDATION_ERROR");
    assert!(e.message().contains("cursor"), "{e:?}");
    server.stop().await;
}

#[tokio::test]
async fn messages_are_listed_and_fetched() {
    let server = Server::start(|_| {}).await;
    let mut client = server.client().await;
    let s = create(&mut client, None).await;
    let id = Uuid::parse_str(&s.id).unwrap();
    let store = server.events.store();
    let first = store
        .append_message(id, NewMessage::text(Role::User, "hi"))
        .await
        .unwrap();
    let mut reply = NewMessage::text(Role::Assistant, "running ls");
    reply.tool_calls.push(ToolCall {
        name: "ls".into(),
        args: json!({"path": "."}),
        id: "c1".into(),
    });
    reply.parent_id = Some(first.id);
    let reply = store.append_message(id, reply).await.unwrap();
    for i in 0..3 {
        store
            .append_message(id, NewMessage::text(Role::User, i.to_string()))
            .await
            .unwrap();
    }

    let req = pb::ListMessagesRequest {
        session_id: s.id.clone(),
        limit: 2,
        offset: 0,
    };
    let page = client.list_messages(req).await.unwrap().into_inner();
    assert_eq!(
        (page.total, page.has_more, page.messages.len()),
        (5, true, 2)
    );
    assert_eq!(page.messages[0].content, "hi");
    assert_eq!(page.messages[0].role, pb::MessageRole::User as i32);
    let m = &page.messages[1];
    assert_eq!(m.tool_calls[0].name, "ls");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&m.tool_calls[0].args_json).unwrap(),
        json!({"path": "."})
    );
    assert_eq!(m.parent_id.as_deref(), Some(first.id.to_string().as_str()));
    let req = pb::ListMessagesRequest {
        session_id: s.id.clone(),
        limit: 0,
        offset: 3,
    };
    let page = client.list_messages(req).await.unwrap().into_inner();
    assert_eq!((page.messages.len(), page.has_more), (2, false));
    let session = client
        .get_session(get(&s.id))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(session.message_count, 5);

    let req = pb::GetMessageRequest {
        session_id: s.id.clone(),
        message_id: reply.id.to_string(),
    };
    let got = client
        .get_message(req)
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap();
    assert_eq!(got.content, "running ls");

    let req = pb::GetMessageRequest {
        session_id: s.id.clone(),
        message_id: Uuid::new_v4().to_string(),
    };
    assert_error(
        &client.get_message(req).await.unwrap_err(),
        Code::NotFound,
        "NOT_FOUND",
    );
    let req = pb::GetMessageRequest {
        session_id: Uuid::new_v4().to_string(),
        message_id: reply.id.to_string(),
    };
    assert_error(
        &client.get_message(req).await.unwrap_err(),
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );
    let req = pb::GetMessageRequest {
        session_id: s.id.clone(),
        message_id: "x".into(),
    };
    let e = client.get_message(req).await.unwrap_err();
    assert_error(&e, Code::InvalidArgument, "VALIDATION_ERROR");
    assert_eq!(e.message(), "message_id must be a UUID");
    let req = pb::ListMessagesRequest {
        session_id: Uuid::new_v4().to_string(),
        limit: 0,
        offset: 0,
    };
    assert_error(
        &client.list_messages(req).await.unwrap_err(),
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );
    let req = pb::ListMessagesRequest {
        session_id: s.id.clone(),
        limit: 1001,
        offset: 0,
    };
    assert_error(
        &client.list_messages(req).await.unwrap_err(),
        Code::InvalidArgument,
        "VALIDATION_ERROR",
    );
    server.stop().await;
}

#[tokio::test]
async fn run_rpcs_validate_and_resume_is_unimplemented() {
    let server = Server::start(|_| {}).await;
    let mut client = server.client().await;
    let s = create(&mut client, None).await;

    let empty = pb::SendMessageRequest {
        session_id: s.id.clone(),
        content: String::new(),
        ..Default::default()
    };
    let e = client.send_message(empty).await.unwrap_err();
    assert_error(&e, Code::InvalidArgument, "VALIDATION_ERROR");
    assert!(e.message().contains("content"), "{e:?}");
    let unknown = pb::SendMessageRequest {
        session_id: Uuid::new_v4().to_string(),
        content: "hi".into(),
        ..Default::default()
    };
    assert_error(
        &client.send_message(unknown).await.unwrap_err(),
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );
    let bad_parent = pb::SendMessageRequest {
        session_id: s.id.clone(),
        content: "hi".into(),
        parent_id: Some("nope".into()),
        ..Default::default()
    };
    assert_error(
        &client.send_message(bad_parent).await.unwrap_err(),
        Code::InvalidArgument,
        "VALIDATION_ERROR",
    );
    let bad_policy = pb::SendMessageRequest {
        session_id: s.id.clone(),
        content: "hi".into(),
        on_busy: 42,
        ..Default::default()
    };
    assert_error(
        &client.send_message(bad_policy).await.unwrap_err(),
        Code::InvalidArgument,
        "VALIDATION_ERROR",
    );
    // A valid message runs (the default provider is the mock model) and its stream ends with
    // `done`.
    let fine = pb::SendMessageRequest {
        session_id: s.id.clone(),
        content: "hi".into(),
        ..Default::default()
    };
    let mut stream = client.send_message(fine).await.unwrap().into_inner();
    let mut last = None;
    while let Some(item) = tokio::time::timeout(STEP, stream.message())
        .await
        .expect("stream item")
        .unwrap()
    {
        last = item.event.and_then(|e| e.kind);
    }
    assert!(matches!(last, Some(pb::event::Kind::Done(_))), "{last:?}");

    // Nothing runs any more: aborting is not an error, just unsuccessful.
    let abort = pb::AbortSessionRequest {
        session_id: s.id.clone(),
    };
    let answer = client.abort_session(abort).await.unwrap().into_inner();
    assert!(!answer.success);
    assert!(answer.message.contains("no active run"), "{answer:?}");
    let resume = pb::ResumeSessionRequest {
        session_id: s.id.clone(),
        ..Default::default()
    };
    assert_eq!(
        client.resume_session(resume).await.unwrap_err().code(),
        Code::Unimplemented
    );
    server.stop().await;
}

#[tokio::test]
async fn scopes_isolate_callers() {
    let server = Server::start(|c| c.scoping_enabled = true).await;
    let mut client = server.client().await;
    let alice = create(&mut client, Some("alice")).await;
    assert_eq!(
        alice.scopes,
        HashMap::from([("user".to_string(), "alice".to_string())])
    );
    let bob = create(&mut client, Some("bob")).await;

    let e = client
        .get_session(scoped(get(&alice.id), Some("bob")))
        .await
        .unwrap_err();
    assert_error(&e, Code::NotFound, "SESSION_NOT_FOUND");
    let own = client
        .get_session(scoped(get(&alice.id), Some("alice")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.session.unwrap().id, alice.id);

    let list = client
        .list_sessions(scoped(pb::ListSessionsRequest::default(), Some("bob")))
        .await;
    let list = list.unwrap().into_inner();
    assert_eq!(list.total, 1);
    assert_eq!(list.sessions[0].id, bob.id);

    let update = pb::UpdateSessionRequest {
        session_id: alice.id.clone(),
        title: Some("mine now".into()),
        ..Default::default()
    };
    assert_error(
        &client
            .update_session(scoped(update, Some("bob")))
            .await
            .unwrap_err(),
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );
    let delete = pb::DeleteSessionRequest {
        session_id: alice.id.clone(),
    };
    assert_error(
        &client
            .delete_session(scoped(delete, Some("bob")))
            .await
            .unwrap_err(),
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );
    let watch = pb::WatchEventsRequest {
        session_id: alice.id.clone(),
        ..Default::default()
    };
    assert_error(
        &client
            .watch_events(scoped(watch, Some("bob")))
            .await
            .unwrap_err(),
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );
    let messages = pb::ListMessagesRequest {
        session_id: alice.id.clone(),
        limit: 0,
        offset: 0,
    };
    assert_error(
        &client
            .list_messages(scoped(messages, Some("bob")))
            .await
            .unwrap_err(),
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );

    // No scope at all: refused before anything else.
    let e = client.get_session(get(&alice.id)).await.unwrap_err();
    assert_error(&e, Code::PermissionDenied, "PERMISSION_DENIED");
    assert!(e.message().contains("X-Cognition-Scope-User"), "{e:?}");
    let e = client
        .create_session(pb::CreateSessionRequest::default())
        .await
        .unwrap_err();
    assert_error(&e, Code::PermissionDenied, "PERMISSION_DENIED");
    let e = client
        .list_sessions(scoped(pb::ListSessionsRequest::default(), Some(" ")))
        .await
        .unwrap_err();
    assert_error(&e, Code::PermissionDenied, "PERMISSION_DENIED");

    let still = client
        .get_session(scoped(get(&alice.id), Some("alice")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.session.unwrap().title, "t");
    server.stop().await;
}

async fn next_event(stream: &mut tonic::Streaming<pb::WatchEventsResponse>) -> Option<pb::Event> {
    let item = tokio::time::timeout(STEP, stream.message())
        .await
        .expect("stream stalled");
    item.expect("stream item").map(|r| r.event.expect("event"))
}

fn token(content: &str) -> EventKind {
    EventKind::Token {
        content: content.into(),
    }
}

#[tokio::test]
async fn watch_replays_the_log_then_follows_live_events() {
    let server = Server::start(|_| {}).await;
    let mut client = server.client().await;
    let s = create(&mut client, None).await;
    let id = Uuid::parse_str(&s.id).unwrap();
    let run = Uuid::new_v4();
    server
        .events
        .append(
            id,
            Some(run),
            EventKind::Status {
                status: RunStatus::Thinking,
            },
        )
        .await
        .unwrap();
    server
        .events
        .append(id, Some(run), token("a"))
        .await
        .unwrap();
    server
        .events
        .append(id, Some(run), token("b"))
        .await
        .unwrap();

    let req = pb::WatchEventsRequest {
        session_id: s.id.clone(),
        after_seq: 1,
        until_done: true,
    };
    let mut stream = client.watch_events(req).await.unwrap().into_inner();
    let e = next_event(&mut stream).await.unwrap();
    assert_eq!(
        (e.seq, e.run_id.as_str(), e.session_id.as_str()),
        (2, run.to_string().as_str(), s.id.as_str())
    );
    assert_eq!(
        e.kind,
        Some(pb::event::Kind::Token(pb::TokenEvent {
            content: "a".into()
        }))
    );
    assert_eq!(next_event(&mut stream).await.unwrap().seq, 3);

    // A second watcher from the start, without until_done.
    let req = pb::WatchEventsRequest {
        session_id: s.id.clone(),
        after_seq: 0,
        until_done: false,
    };
    let mut follower = client.watch_events(req).await.unwrap().into_inner();
    for seq in 1..=3 {
        assert_eq!(next_event(&mut follower).await.unwrap().seq, seq);
    }

    server
        .events
        .append(id, Some(run), token("c"))
        .await
        .unwrap();
    let e = next_event(&mut stream).await.unwrap();
    assert_eq!(e.seq, 4);
    assert_eq!(
        e.kind,
        Some(pb::event::Kind::Token(pb::TokenEvent {
            content: "c".into()
        }))
    );
    let done = NewMessage::text(Role::Assistant, "abc").into_message(id);
    server
        .events
        .append(
            id,
            Some(run),
            EventKind::Done {
                assistant_data: done,
            },
        )
        .await
        .unwrap();
    let e = next_event(&mut stream).await.unwrap();
    assert_eq!(e.seq, 5);
    match e.kind {
        Some(pb::event::Kind::Done(d)) => assert_eq!(d.assistant_data.unwrap().content, "abc"),
        other => panic!("expected done, got {other:?}"),
    }
    assert!(
        next_event(&mut stream).await.is_none(),
        "until_done ends the stream after done"
    );

    for seq in 4..=5 {
        assert_eq!(next_event(&mut follower).await.unwrap().seq, seq);
    }
    server.events.append(id, None, token("d")).await.unwrap();
    assert_eq!(
        next_event(&mut follower).await.unwrap().seq,
        6,
        "without until_done it keeps following"
    );

    let unknown = pb::WatchEventsRequest {
        session_id: Uuid::new_v4().to_string(),
        ..Default::default()
    };
    assert_error(
        &client.watch_events(unknown).await.unwrap_err(),
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_misses_and_repeats_nothing_while_events_are_appended() {
    let server = Server::start(|_| {}).await;
    let mut client = server.client().await;
    let s = create(&mut client, None).await;
    let id = Uuid::parse_str(&s.id).unwrap();
    const EVENTS: u64 = 300;

    let appender = tokio::spawn({
        let events = server.events.clone();
        async move {
            for i in 1..EVENTS {
                events
                    .append(id, None, token(&i.to_string()))
                    .await
                    .unwrap();
                if i % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            let done = NewMessage::text(Role::Assistant, "end").into_message(id);
            events
                .append(
                    id,
                    None,
                    EventKind::Done {
                        assistant_data: done,
                    },
                )
                .await
                .unwrap();
        }
    });
    // Several watchers join at different moments of the run: some mostly replay, some mostly
    // follow live events; each must see exactly 1..=EVENTS.
    let mut watchers = Vec::new();
    for _ in 0..4 {
        let mut client = client.clone();
        let session_id = s.id.clone();
        watchers.push(tokio::spawn(async move {
            let req = pb::WatchEventsRequest {
                session_id,
                after_seq: 0,
                until_done: true,
            };
            let mut stream = client.watch_events(req).await.unwrap().into_inner();
            let mut seqs = Vec::new();
            while let Some(e) = next_event(&mut stream).await {
                seqs.push(e.seq);
            }
            seqs
        }));
        tokio::task::yield_now().await;
    }
    appender.await.unwrap();
    for watcher in watchers {
        assert_eq!(watcher.await.unwrap(), (1..=EVENTS).collect::<Vec<_>>());
    }
    server.stop().await;
}

#[tokio::test]
async fn watch_streams_end_on_shutdown_and_on_delete() {
    let server = Server::start(|_| {}).await;
    let mut client = server.client().await;
    let doomed = create(&mut client, None).await;
    let req = pb::WatchEventsRequest {
        session_id: doomed.id.clone(),
        ..Default::default()
    };
    let mut on_delete = client.watch_events(req).await.unwrap().into_inner();
    let req = pb::DeleteSessionRequest {
        session_id: doomed.id.clone(),
    };
    client.delete_session(req).await.unwrap();
    assert!(
        next_event(&mut on_delete).await.is_none(),
        "deleting the session ends its watches"
    );

    let s = create(&mut client, None).await;
    let req = pb::WatchEventsRequest {
        session_id: s.id.clone(),
        ..Default::default()
    };
    let mut stream = client.watch_events(req).await.unwrap().into_inner();
    server
        .events
        .append(Uuid::parse_str(&s.id).unwrap(), None, token("x"))
        .await
        .unwrap();
    assert_eq!(next_event(&mut stream).await.unwrap().seq, 1);
    server.shutdown.cancel();
    let end = tokio::time::timeout(STEP, stream.message())
        .await
        .expect("stream ends on shutdown");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
    tokio::time::timeout(STEP, server.task)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn delete_removes_the_sessions_sandboxes() {
    let executor = FakeExecutor::default();
    let executor_stop = CancellationToken::new();
    let executor_addr = executor.start(executor_stop.clone()).await;
    let server = Server::start(|c| c.executor_url = Some(format!("http://{executor_addr}"))).await;
    let mut client = server.client().await;
    let s = create(&mut client, None).await;
    let other = create(&mut client, None).await;
    executor.add_sandbox("sb-1", &[("cognition.io/session", &s.id)]);
    executor.add_sandbox(
        "sb-2",
        &[
            ("cognition.io/session", &s.id),
            ("cognition.io/user", "alice"),
        ],
    );
    executor.add_sandbox("sb-other", &[("cognition.io/session", &other.id)]);

    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: s.id.clone(),
        })
        .await
        .unwrap();
    {
        let recorded = executor.recorded.lock().unwrap();
        assert_eq!(
            recorded.list_selectors,
            vec![HashMap::from([(
                "cognition.io/session".to_string(),
                s.id.clone()
            )])]
        );
        let mut deleted = recorded.deleted.clone();
        deleted.sort();
        assert_eq!(deleted, vec!["sb-1", "sb-2"]);
    }
    assert_eq!(executor.sandbox_ids(), vec!["sb-other"]);

    // A failed delete (unknown session) does not touch the executor.
    let unknown = pb::DeleteSessionRequest {
        session_id: Uuid::new_v4().to_string(),
    };
    assert!(client.delete_session(unknown).await.is_err());
    assert_eq!(executor.recorded.lock().unwrap().list_selectors.len(), 1);
    server.stop().await;
    executor_stop.cancel();
}

#[tokio::test]
async fn delete_succeeds_when_the_executor_is_unreachable() {
    // Bind and drop a listener: nothing listens on that port any more.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let server = Server::start(|c| c.executor_url = Some(format!("http://{addr}"))).await;
    let mut client = server.client().await;
    let s = create(&mut client, None).await;
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: s.id.clone(),
        })
        .await
        .unwrap();
    assert_error(
        &client.get_session(get(&s.id)).await.unwrap_err(),
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );
    server.stop().await;
}

#[tokio::test]
async fn run_serves_health_and_stops_on_shutdown() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let dir = tempfile::tempdir().unwrap();
    let config = Config::embedded(dir.path().join("fresh/data"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(cognition_session::run(config, listener, shutdown.clone()));

    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "cognition.session.v1.SessionService"] {
        let req = HealthCheckRequest {
            service: service.into(),
        };
        let status = health.check(req).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let mut client = SessionServiceClient::new(channel);
    let s = client
        .create_session(pb::CreateSessionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(s.session.is_some());
    assert!(
        dir.path().join("fresh/data/cognition.db").exists(),
        "run creates the data dir and database"
    );

    shutdown.cancel();
    tokio::time::timeout(STEP, task)
        .await
        .expect("run returns")
        .unwrap()
        .unwrap();
}
