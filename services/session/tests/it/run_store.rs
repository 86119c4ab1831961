//! The run rows of the store (both backends): one running run per session, queue order,
//! leases, take-over, cancel requests, atomic finish with `done`, batched event appends.

use std::sync::Arc;

use chrono::Duration;
use cognition_session::domain::{NewSession, Role, now};
use cognition_session::event::EventKind;
use cognition_session::store::{self, Lease, NewRun, RunState, Store};
use uuid::Uuid;

use super::support::Db;

fn lease(owner: &str, secs: i64) -> Lease {
    Lease {
        owner: owner.to_owned(),
        until: now() + Duration::seconds(secs),
    }
}

fn new_run(session_id: Uuid, content: &str) -> NewRun {
    NewRun {
        session_id,
        content: content.to_owned(),
        model: None,
        parent_id: None,
        callback_url: None,
    }
}

fn done() -> EventKind {
    EventKind::Done {
        assistant_data: cognition_session::domain::NewMessage::text(Role::Assistant, "x")
            .into_message(Uuid::nil()),
    }
}

async fn session(db: &Db) -> Uuid {
    db.store
        .create_session(NewSession::new("default"))
        .await
        .unwrap()
        .id
}

async fn one_running_run_and_queue_order(db: &Db) {
    let store = &db.store;
    let id = session(db).await;
    let (a, message) = store
        .start_run(new_run(id, "a"), &lease("r1", 10))
        .await
        .unwrap();
    assert_eq!(a.state, RunState::Running);
    assert_eq!(a.owner.as_deref(), Some("r1"));
    assert_eq!(a.user_message_id, Some(message.id));
    assert_eq!(message.content, "a");
    assert!(matches!(
        store.start_run(new_run(id, "b"), &lease("r2", 10)).await,
        Err(store::Error::Busy(s)) if s == id
    ));
    assert_eq!(
        store.conversation(id).await.unwrap().len(),
        1,
        "nothing stored when busy"
    );
    let c = store.enqueue_run(new_run(id, "c")).await.unwrap();
    let d = store.enqueue_run(new_run(id, "d")).await.unwrap();
    assert_eq!(c.state, RunState::Queued);
    assert!(
        store
            .start_next_run(id, &lease("r1", 10))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.sessions_with_startable_runs(10).await.unwrap(),
        Vec::<Uuid>::new()
    );
    // A queued session is busy too.
    assert!(matches!(
        store.start_run(new_run(id, "e"), &lease("r2", 10)).await,
        Err(store::Error::Busy(_))
    ));

    assert!(
        store
            .finish_run(a.id, "other", RunState::Completed, None, &done())
            .await
            .unwrap()
            .is_none()
    );
    let event = store
        .finish_run(a.id, "r1", RunState::Completed, None, &done())
        .await
        .unwrap()
        .expect("finished");
    assert_eq!(event.run_id, Some(a.id));
    assert!(
        store
            .finish_run(a.id, "r1", RunState::Failed, None, &done())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.get_run(a.id).await.unwrap().unwrap().state,
        RunState::Completed
    );
    assert_eq!(
        store.sessions_with_startable_runs(10).await.unwrap(),
        vec![id]
    );

    let (started, message) = store
        .start_next_run(id, &lease("r2", 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(started.id, c.id);
    assert_eq!(started.owner.as_deref(), Some("r2"));
    assert_eq!(message.content, "c");
    let texts: Vec<String> = store
        .conversation(id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(texts, ["a", "c"]);
    assert_eq!(store.running_run(id).await.unwrap().unwrap().id, c.id);
    store
        .finish_run(c.id, "r2", RunState::Cancelled, Some("x"), &done())
        .await
        .unwrap()
        .unwrap();
    let (started, _) = store
        .start_next_run(id, &lease("r2", 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(started.id, d.id);
}

async fn leases_cancels_and_take_over(db: &Db) {
    let store = &db.store;
    let id = session(db).await;
    let other = session(db).await;
    let (run, _) = store
        .start_run(new_run(id, "a"), &lease("r1", -1))
        .await
        .unwrap();
    let (fresh, _) = store
        .start_run(new_run(other, "b"), &lease("r1", 60))
        .await
        .unwrap();
    assert!(
        store
            .renew_leases(&lease("r2", 10), &[run.id])
            .await
            .unwrap()
            .is_empty()
    );

    assert!(
        store
            .request_cancel(Uuid::new_v4())
            .await
            .unwrap()
            .is_none()
    );
    let cancelled = store.request_cancel(id).await.unwrap().unwrap();
    assert_eq!(cancelled.id, run.id);
    assert!(cancelled.cancel_requested);

    // Only the expired one is taken over.
    let taken = store
        .take_over_expired_runs(&lease("r2", 10), now(), 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].id, run.id);
    assert_eq!(taken[0].owner.as_deref(), Some("r2"));
    assert!(taken[0].cancel_requested);
    assert!(
        store
            .take_over_expired_runs(&lease("r3", 10), now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The old owner lost it: renewals skip it, finishing does nothing.
    let renewed = store
        .renew_leases(&lease("r1", 10), &[run.id, fresh.id])
        .await
        .unwrap();
    assert_eq!(renewed.len(), 1);
    assert_eq!(renewed[0].run_id, fresh.id);
    assert!(!renewed[0].cancel_requested);
    assert!(
        store
            .finish_run(run.id, "r1", RunState::Completed, None, &done())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .finish_run(
                run.id,
                "r2",
                RunState::Interrupted,
                Some("stopped"),
                &done()
            )
            .await
            .unwrap()
            .is_some()
    );
    let row = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(row.state, RunState::Interrupted);
    assert_eq!(row.error.as_deref(), Some("stopped"));
    assert!(row.finished_at.is_some());
}

async fn concurrent_starts_elect_one_run(db: &Db) {
    // Two "replicas" (store instances with pools of their own) race for one session.
    let second: Arc<dyn Store> = store::open(&db.config).await.unwrap();
    let id = session(db).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 {
            Arc::clone(&db.store)
        } else {
            Arc::clone(&second)
        };
        tasks.push(tokio::spawn(async move {
            store
                .start_run(new_run(id, &format!("m{i}")), &lease(&format!("r{i}"), 10))
                .await
        }));
    }
    let mut started = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => started += 1,
            Err(store::Error::Busy(_)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(started, 1);
    assert_eq!(db.store.conversation(id).await.unwrap().len(), 1);
    second.close().await;
}

async fn batched_event_appends(db: &Db) {
    let store = &db.store;
    let id = session(db).await;
    let run = Some(Uuid::new_v4());
    store
        .append_event(
            id,
            None,
            &EventKind::Token {
                content: "a".into(),
            },
        )
        .await
        .unwrap();
    let kinds: Vec<EventKind> = (0..300)
        .map(|i| EventKind::Token {
            content: i.to_string(),
        })
        .collect();
    let events = store.append_events(id, run, &kinds[..256]).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (2..=257).collect::<Vec<_>>());
    assert!(store.append_events(id, run, &[]).await.unwrap().is_empty());
    assert_eq!(store.last_event_seq(id).await.unwrap(), 257);
    let read = store.events_after(id, 1, 1000).await.unwrap();
    assert_eq!(read.len(), 256);
    assert_eq!(read[10].kind, kinds[10]);
    assert_eq!(read[10].run_id, run);
    assert!(matches!(
        store.append_events(Uuid::new_v4(), None, &kinds[..1]).await,
        Err(store::Error::SessionNotFound(_))
    ));
}

macro_rules! run_store_suite {
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

run_store_suite!(
    one_running_run_and_queue_order,
    leases_cancels_and_take_over,
    concurrent_starts_elect_one_run,
    batched_event_appends,
);
