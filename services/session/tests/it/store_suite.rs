//! One behavioural suite for every `Store` implementation: each case below runs against SQLite
//! (temp file) and PostgreSQL (fresh database), see `store_suite!` at the bottom.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use cognition_proto::scope::Scope;
use cognition_session::domain::{
    NewMessage, NewSession, Role, Session, SessionConfig, SessionPatch, SessionStatus, StringMap,
    ToolCall,
};
use cognition_session::event::{EventKind, RunStatus};
use cognition_session::store::{self, Cursor, SessionQuery};
use cognition_session::{PersistenceBackend, current_version, migrate};
use serde_json::json;
use uuid::Uuid;

use super::support::Db;

fn map(pairs: &[(&str, &str)]) -> StringMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn scope(pairs: &[(&str, &str)]) -> Scope {
    Scope(map(pairs).into_iter().collect::<BTreeMap<_, _>>())
}

fn everyone() -> Scope {
    Scope::default()
}

async fn create(
    db: &Db,
    title: &str,
    metadata: &[(&str, &str)],
    scopes: &[(&str, &str)],
) -> Session {
    let mut new = NewSession::new("default");
    new.title = Some(title.to_owned());
    new.metadata = map(metadata);
    new.scopes = map(scopes);
    db.store.create_session(new).await.expect("create session")
}

fn latest_migration(backend: PersistenceBackend) -> i64 {
    let migrator = match backend {
        PersistenceBackend::Sqlite => &store::sqlite::MIGRATOR,
        PersistenceBackend::Postgres => &store::postgres::MIGRATOR,
    };
    migrator
        .iter()
        .map(|m| m.version)
        .max()
        .expect("at least one migration")
}

async fn crud(db: &Db) {
    let mut new = NewSession::new("readonly");
    new.title = Some("first".into());
    new.metadata = map(&[("project", "x")]);
    new.config.model = Some("gpt".into());
    let created = db.store.create_session(new).await.unwrap();
    assert_eq!(created.status, SessionStatus::Active);
    assert_eq!(created.agent_name, "readonly");
    assert_eq!(created.message_count, 0);
    assert!(Uuid::try_parse(&created.thread_id).is_ok());

    let got = db
        .store
        .get_session(&everyone(), created.id)
        .await
        .unwrap()
        .expect("found");
    assert_eq!(got, created, "a session reads back exactly as created");

    let patch = SessionPatch {
        title: Some("renamed".into()),
        metadata: Some(map(&[("team", "y")])),
        config: Some(SessionConfig {
            temperature: Some(0.5),
            ..Default::default()
        }),
        ..Default::default()
    };
    let updated = db
        .store
        .update_session(&everyone(), created.id, &patch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.title.as_deref(), Some("renamed"));
    assert_eq!(
        updated.metadata,
        map(&[("team", "y")]),
        "metadata is replaced, not merged"
    );
    assert_eq!(
        updated.config,
        SessionConfig {
            temperature: Some(0.5),
            ..Default::default()
        }
    );
    assert_eq!(updated.agent_name, "readonly");
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at >= created.updated_at);
    assert_eq!(
        db.store
            .get_session(&everyone(), created.id)
            .await
            .unwrap()
            .unwrap(),
        updated
    );

    assert!(
        db.store
            .delete_session(&everyone(), created.id)
            .await
            .unwrap()
    );
    assert!(
        db.store
            .get_session(&everyone(), created.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !db.store
            .delete_session(&everyone(), created.id)
            .await
            .unwrap()
    );
}

async fn partial_updates(db: &Db) {
    let s = create(db, "t", &[("a", "1")], &[]).await;
    let only_title = SessionPatch {
        title: Some("t2".into()),
        ..Default::default()
    };
    let u = db
        .store
        .update_session(&everyone(), s.id, &only_title)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.metadata, s.metadata, "absent metadata is left alone");
    assert_eq!(u.config, s.config);

    let status = SessionPatch {
        status: Some(SessionStatus::WaitingForApproval),
        ..Default::default()
    };
    let u = db
        .store
        .update_session(&everyone(), s.id, &status)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.status, SessionStatus::WaitingForApproval);
    assert_eq!(u.title.as_deref(), Some("t2"));

    let empty_metadata = SessionPatch {
        metadata: Some(StringMap::new()),
        ..Default::default()
    };
    let u = db
        .store
        .update_session(&everyone(), s.id, &empty_metadata)
        .await
        .unwrap()
        .unwrap();
    assert!(
        u.metadata.is_empty(),
        "present-but-empty metadata clears it"
    );

    let nothing = db
        .store
        .update_session(&everyone(), s.id, &SessionPatch::default())
        .await
        .unwrap();
    assert_eq!(nothing.unwrap().id, s.id);
    let unknown = db
        .store
        .update_session(&everyone(), Uuid::new_v4(), &only_title)
        .await
        .unwrap();
    assert!(unknown.is_none());
}

async fn metadata_filters(db: &Db) {
    let both = create(db, "both", &[("env", "prod"), ("team", "a")], &[]).await;
    let prod = create(db, "prod", &[("env", "prod"), ("team", "b")], &[]).await;
    let _dev = create(db, "dev", &[("env", "dev"), ("team", "a")], &[]).await;
    let odd = create(db, "odd", &[("we\"ird.key", "va'lue")], &[]).await;

    let list = |filter: StringMap| {
        let store = Arc::clone(&db.store);
        async move {
            let q = SessionQuery {
                metadata: filter,
                limit: 100,
                cursor: None,
            };
            let page = store.list_sessions(&Scope::default(), &q).await.unwrap();
            let ids: HashSet<Uuid> = page.sessions.iter().map(|s| s.id).collect();
            (ids, page.total)
        }
    };
    let (ids, total) = list(map(&[("env", "prod")])).await;
    assert_eq!(ids, HashSet::from([both.id, prod.id]));
    assert_eq!(total, 2);
    let (ids, total) = list(map(&[("env", "prod"), ("team", "a")])).await;
    assert_eq!(ids, HashSet::from([both.id]), "every predicate must match");
    assert_eq!(total, 1);
    let (ids, total) = list(map(&[("env", "staging")])).await;
    assert!(ids.is_empty());
    assert_eq!(total, 0);
    let (ids, _) = list(map(&[("we\"ird.key", "va'lue")])).await;
    assert_eq!(
        ids,
        HashSet::from([odd.id]),
        "keys and values are data, not SQL or JSON paths"
    );
    let (_, total) = list(StringMap::new()).await;
    assert_eq!(total, 4);
}

async fn cursor_paging(db: &Db) {
    let mut created = Vec::new();
    for i in 0..23 {
        let meta: &[(&str, &str)] = if i % 2 == 0 { &[("even", "yes")] } else { &[] };
        created.push(create(db, &format!("s{i}"), meta, &[]).await);
    }
    for (filter, expected) in [(StringMap::new(), 23usize), (map(&[("even", "yes")]), 12)] {
        let mut seen = Vec::new();
        let mut cursor: Option<Cursor> = None;
        let mut pages = 0;
        loop {
            let q = SessionQuery {
                metadata: filter.clone(),
                limit: 5,
                cursor,
            };
            let page = db.store.list_sessions(&everyone(), &q).await.unwrap();
            assert_eq!(page.total, expected as u64, "total counts every page");
            assert!(page.sessions.len() <= 5);
            pages += 1;
            seen.extend(page.sessions.iter().map(|s| (s.created_at, s.id)));
            match page.next_cursor {
                // The cursor survives its string form.
                Some(c) => cursor = Some(Cursor::decode(&c.encode()).unwrap()),
                None => break,
            }
        }
        assert_eq!(pages, expected.div_ceil(5));
        assert_eq!(seen.len(), expected, "no gaps");
        assert_eq!(
            seen.iter().collect::<HashSet<_>>().len(),
            expected,
            "no duplicates"
        );
        let mut sorted = seen.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(seen, sorted, "newest first, id breaking ties");
    }
    // A session created after paging started does not disturb later pages.
    let q = SessionQuery {
        metadata: StringMap::new(),
        limit: 10,
        cursor: None,
    };
    let first = db.store.list_sessions(&everyone(), &q).await.unwrap();
    create(db, "late", &[], &[]).await;
    let q = SessionQuery {
        cursor: first.next_cursor,
        ..q
    };
    let second = db.store.list_sessions(&everyone(), &q).await.unwrap();
    let first_ids: HashSet<_> = first.sessions.iter().map(|s| s.id).collect();
    assert!(second.sessions.iter().all(|s| !first_ids.contains(&s.id)));
    assert_eq!(second.sessions.len(), 10);
    let oldest = created.first().unwrap();
    assert!(
        first
            .sessions
            .iter()
            .chain(&second.sessions)
            .all(|s| s.id != oldest.id)
    );
}

async fn scope_isolation(db: &Db) {
    let alice = scope(&[("user", "alice")]);
    let bob = scope(&[("user", "bob")]);
    let a = create(db, "a", &[("k", "v")], &[("user", "alice")]).await;
    let b = create(db, "b", &[("k", "v")], &[("user", "bob")]).await;
    let team = create(db, "team", &[], &[("user", "alice"), ("org", "acme")]).await;
    db.store
        .append_message(a.id, NewMessage::text(Role::User, "secret"))
        .await
        .unwrap();
    let msg = db
        .store
        .list_messages(&alice, a.id, 10, 0)
        .await
        .unwrap()
        .unwrap()
        .messages[0]
        .clone();

    assert!(db.store.get_session(&bob, a.id).await.unwrap().is_none());
    assert!(db.store.get_session(&alice, a.id).await.unwrap().is_some());
    assert!(
        db.store
            .get_session(&alice, team.id)
            .await
            .unwrap()
            .is_some(),
        "extra resource keys are fine"
    );
    assert!(
        db.store
            .get_session(&scope(&[("user", "alice"), ("org", "other")]), team.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        db.store
            .get_session(&scope(&[("user", "ALICE")]), a.id)
            .await
            .unwrap()
            .is_none()
    );

    let q = SessionQuery {
        metadata: map(&[("k", "v")]),
        limit: 10,
        cursor: None,
    };
    let page = db.store.list_sessions(&bob, &q).await.unwrap();
    assert_eq!(
        page.sessions.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![b.id]
    );
    assert_eq!(page.total, 1, "other scopes are not counted");
    let q = SessionQuery {
        metadata: StringMap::new(),
        limit: 10,
        cursor: None,
    };
    assert_eq!(db.store.list_sessions(&alice, &q).await.unwrap().total, 2);
    assert_eq!(
        db.store.list_sessions(&everyone(), &q).await.unwrap().total,
        3
    );

    let patch = SessionPatch {
        title: Some("stolen".into()),
        ..Default::default()
    };
    assert!(
        db.store
            .update_session(&bob, a.id, &patch)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!db.store.delete_session(&bob, a.id).await.unwrap());
    assert!(
        db.store
            .list_messages(&bob, a.id, 10, 0)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        db.store
            .get_message(&bob, a.id, msg.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        db.store
            .get_message(&alice, a.id, msg.id)
            .await
            .unwrap()
            .is_some()
    );

    let untouched = db.store.get_session(&alice, a.id).await.unwrap().unwrap();
    assert_eq!(untouched.title.as_deref(), Some("a"));
    assert!(db.store.delete_session(&alice, a.id).await.unwrap());
}

async fn messages(db: &Db) {
    let s = create(db, "m", &[], &[]).await;
    let parent = db
        .store
        .append_message(s.id, NewMessage::text(Role::User, "hello"))
        .await
        .unwrap();
    let mut reply = NewMessage::text(Role::Assistant, "listing");
    reply.tool_calls.push(ToolCall {
        name: "ls".into(),
        args: json!({"path": "."}),
        id: "c1".into(),
    });
    reply.token_count = Some(42);
    reply.model_used = Some("gpt".into());
    reply.parent_id = Some(parent.id);
    let reply = db.store.append_message(s.id, reply).await.unwrap();
    let mut tool = NewMessage::text(Role::Tool, "a.txt");
    tool.tool_call_id = Some("c1".into());
    let tool = db.store.append_message(s.id, tool).await.unwrap();
    for i in 0..3 {
        db.store
            .append_message(s.id, NewMessage::text(Role::User, format!("more {i}")))
            .await
            .unwrap();
    }

    let session = db
        .store
        .get_session(&everyone(), s.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.message_count, 6);
    assert!(session.updated_at >= s.updated_at);

    let page = db
        .store
        .list_messages(&everyone(), s.id, 2, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((page.total, page.has_more), (6, true));
    assert_eq!(
        page.messages,
        vec![parent.clone(), reply.clone()],
        "oldest first, exact round trip"
    );
    let page = db
        .store
        .list_messages(&everyone(), s.id, 2, 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.messages[0], tool);
    let page = db
        .store
        .list_messages(&everyone(), s.id, 50, 4)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((page.messages.len(), page.has_more), (2, false));
    assert_eq!(page.messages[1].content, "more 2");
    let page = db
        .store
        .list_messages(&everyone(), s.id, 50, 100)
        .await
        .unwrap()
        .unwrap();
    assert!(page.messages.is_empty() && !page.has_more);

    assert_eq!(
        db.store
            .get_message(&everyone(), s.id, reply.id)
            .await
            .unwrap(),
        Some(reply.clone())
    );
    let other = create(db, "other", &[], &[]).await;
    assert!(
        db.store
            .get_message(&everyone(), other.id, reply.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        db.store
            .get_message(&everyone(), s.id, Uuid::new_v4())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        db.store
            .list_messages(&everyone(), Uuid::new_v4(), 10, 0)
            .await
            .unwrap()
            .is_none()
    );

    let missing = db
        .store
        .append_message(Uuid::new_v4(), NewMessage::text(Role::User, "x"))
        .await;
    assert!(
        matches!(missing, Err(store::Error::SessionNotFound(_))),
        "{missing:?}"
    );
}

async fn events(db: &Db) {
    let a = create(db, "a", &[], &[]).await;
    let b = create(db, "b", &[], &[]).await;
    let run = Uuid::new_v4();
    let done = NewMessage::text(Role::Assistant, "bye").into_message(a.id);
    let kinds = vec![
        EventKind::Status {
            status: RunStatus::Thinking,
        },
        EventKind::Token {
            content: "he".into(),
        },
        EventKind::ToolCall {
            name: "ls".into(),
            args: json!({"path": "."}),
            id: "c1".into(),
        },
        EventKind::Done {
            assistant_data: done,
        },
    ];
    for (i, kind) in kinds.iter().enumerate() {
        let e = db.store.append_event(a.id, Some(run), kind).await.unwrap();
        assert_eq!(e.seq, i as u64 + 1);
        assert_eq!(e.run_id, Some(run));
    }
    let e = db
        .store
        .append_event(
            b.id,
            None,
            &EventKind::Token {
                content: "b".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(e.seq, 1, "seq is per session");

    let all = db.store.events_after(a.id, 0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        all.iter().map(|e| e.kind.clone()).collect::<Vec<_>>(),
        kinds,
        "data round-trips"
    );
    assert!(
        all.iter()
            .all(|e| e.session_id == a.id && e.run_id == Some(run))
    );
    let tail = db.store.events_after(a.id, 2, 100).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
    let limited = db.store.events_after(a.id, 0, 3).await.unwrap();
    assert_eq!(limited.len(), 3);
    assert!(
        db.store
            .events_after(a.id, 4, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(db.store.events_after(b.id, 0, 100).await.unwrap().len(), 1);

    let missing = db.store.append_event(Uuid::new_v4(), None, &kinds[0]).await;
    assert!(
        matches!(missing, Err(store::Error::SessionNotFound(_))),
        "{missing:?}"
    );
}

async fn concurrent_event_appends(db: &Db) {
    let s = create(db, "busy", &[], &[]).await;
    let other = create(db, "other", &[], &[]).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = Arc::clone(&db.store);
        let target = if i % 4 == 0 { other.id } else { s.id };
        tasks.push(tokio::spawn(async move {
            let e = store
                .append_event(
                    target,
                    None,
                    &EventKind::Token {
                        content: i.to_string(),
                    },
                )
                .await;
            (target, e.expect("append").seq)
        }));
    }
    let mut seqs: Vec<u64> = Vec::new();
    let mut other_seqs: Vec<u64> = Vec::new();
    for task in tasks {
        let (target, seq) = task.await.unwrap();
        if target == s.id {
            seqs.push(seq)
        } else {
            other_seqs.push(seq)
        }
    }
    seqs.sort_unstable();
    other_seqs.sort_unstable();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>(), "distinct and gap-free");
    assert_eq!(other_seqs, (1..=10).collect::<Vec<_>>());
    let logged: Vec<u64> = db
        .store
        .events_after(s.id, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        logged,
        (1..=30).collect::<Vec<_>>(),
        "the log is in seq order"
    );
}

async fn concurrent_message_appends(db: &Db) {
    let s = create(db, "chat", &[], &[]).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = Arc::clone(&db.store);
        tasks.push(tokio::spawn(async move {
            store
                .append_message(s.id, NewMessage::text(Role::User, i.to_string()))
                .await
                .expect("append")
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let page = db
        .store
        .list_messages(&everyone(), s.id, 100, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.total, 20);
    assert_eq!(page.messages.len(), 20);
    let contents: HashSet<_> = page.messages.iter().map(|m| m.content.clone()).collect();
    assert_eq!(contents.len(), 20);
}

async fn delete_cascades(db: &Db) {
    let s = create(db, "doomed", &[], &[]).await;
    let keep = create(db, "kept", &[], &[]).await;
    for target in [s.id, keep.id] {
        db.store
            .append_message(target, NewMessage::text(Role::User, "hi"))
            .await
            .unwrap();
        db.store
            .append_event(
                target,
                None,
                &EventKind::Token {
                    content: "x".into(),
                },
            )
            .await
            .unwrap();
    }
    assert_eq!(db.count_rows("messages", s.id).await, 1);
    assert_eq!(db.count_rows("events", s.id).await, 1);
    assert!(db.store.delete_session(&everyone(), s.id).await.unwrap());
    assert_eq!(db.count_rows("messages", s.id).await, 0);
    assert_eq!(db.count_rows("events", s.id).await, 0);
    assert!(db.store.events_after(s.id, 0, 10).await.unwrap().is_empty());
    assert_eq!(
        db.count_rows("messages", keep.id).await,
        1,
        "other sessions are untouched"
    );
    assert_eq!(db.count_rows("events", keep.id).await, 1);
}

async fn migrations(db: &Db) {
    let latest = latest_migration(db.config.persistence_backend);
    // The open store already migrated: running again changes nothing.
    for _ in 0..2 {
        let report = migrate(&db.config).await.unwrap();
        assert!(report.applied.is_empty(), "{report:?}");
        assert_eq!(report.current_version, Some(latest));
    }
    assert_eq!(current_version(&db.config).await.unwrap(), Some(latest));

    let blank = db.blank_sibling().await;
    assert_eq!(current_version(&blank.config).await.unwrap(), None);
    if blank.config.persistence_backend == PersistenceBackend::Sqlite {
        assert!(
            !blank.config.data_dir.exists(),
            "current_version creates nothing"
        );
    }
    let report = migrate(&blank.config).await.unwrap();
    assert_eq!(report.applied.iter().map(|m| m.version).max(), Some(latest));
    assert!(!report.applied[0].description.is_empty());
    assert_eq!(report.current_version, Some(latest));
    assert_eq!(current_version(&blank.config).await.unwrap(), Some(latest));
    let again = migrate(&blank.config).await.unwrap();
    assert!(again.applied.is_empty());
    // A store opened on a migrated database works.
    let store = store::open(&blank.config).await.unwrap();
    store
        .create_session(NewSession::new("default"))
        .await
        .unwrap();
    store.close().await;
}

macro_rules! store_suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = super::Db::sqlite().await;
                    super::$case(&db).await;
                    db.store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = super::Db::postgres().await else { return };
                    super::$case(&db).await;
                    db.store.close().await;
                }
            )*
        }
    };
}

store_suite!(
    crud,
    partial_updates,
    metadata_filters,
    cursor_paging,
    scope_isolation,
    messages,
    events,
    concurrent_event_appends,
    concurrent_message_appends,
    delete_cascades,
    migrations,
);
