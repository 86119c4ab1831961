//! `write_todos`: the agent's plan. Each call replaces the list; the run emits `planning` with
//! the items, and `step_complete` for every item that became `completed` since the last call.

use serde::Deserialize;

use crate::event::EventKind;

/// One item of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Todo {
    pub content: String,
    #[serde(default)]
    pub status: TodoStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TodoStatus {
    #[default]
    Pending,
    InProgress,
    Completed,
}

/// Arguments of `write_todos`.
#[derive(Debug, Deserialize)]
pub struct WriteTodos {
    pub todos: Vec<Todo>,
}

/// The plan of one run, to tell newly completed items apart.
#[derive(Debug, Default)]
pub struct Plan {
    completed: Vec<String>,
}

impl Plan {
    /// Applies a new list: the events to emit and the text the model gets back.
    pub fn update(&mut self, todos: &[Todo]) -> (Vec<EventKind>, String) {
        let mut events = vec![EventKind::Planning {
            todos: todos.iter().map(|t| t.content.clone()).collect(),
        }];
        let total = u32::try_from(todos.len()).unwrap_or(u32::MAX);
        let mut done_so_far = 0u32;
        let mut completed = Vec::new();
        for todo in todos {
            if todo.status != TodoStatus::Completed {
                continue;
            }
            done_so_far += 1;
            completed.push(todo.content.clone());
            if !self.completed.contains(&todo.content) {
                events.push(EventKind::StepComplete {
                    step_number: done_so_far,
                    total_steps: total,
                    description: todo.content.clone(),
                });
            }
        }
        self.completed = completed;
        let listing = todos
            .iter()
            .map(|t| {
                let status = match t.status {
                    TodoStatus::Pending => "pending",
                    TodoStatus::InProgress => "in_progress",
                    TodoStatus::Completed => "completed",
                };
                format!("- [{status}] {}", t.content)
            })
            .collect::<Vec<_>>()
            .join("\n");
        (events, format!("Updated todo list:\n{listing}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn todo(content: &str, status: TodoStatus) -> Todo {
        Todo {
            content: content.into(),
            status,
        }
    }

    #[test]
    fn completed_items_are_reported_once() {
        let mut plan = Plan::default();
        let (events, text) = plan.update(&[
            todo("a", TodoStatus::InProgress),
            todo("b", TodoStatus::Pending),
        ]);
        assert_eq!(
            events,
            vec![EventKind::Planning {
                todos: vec!["a".into(), "b".into()]
            }]
        );
        assert!(text.contains("[in_progress] a"), "{text}");
        let (events, _) = plan.update(&[
            todo("a", TodoStatus::Completed),
            todo("b", TodoStatus::InProgress),
        ]);
        assert_eq!(
            events[1],
            EventKind::StepComplete {
                step_number: 1,
                total_steps: 2,
                description: "a".into()
            }
        );
        let (events, _) = plan.update(&[
            todo("a", TodoStatus::Completed),
            todo("b", TodoStatus::Completed),
        ]);
        assert_eq!(events.len(), 2);
        assert!(
            matches!(&events[1], EventKind::StepComplete { step_number: 2, description, .. } if description == "b")
        );
    }

    #[test]
    fn status_defaults_to_pending_and_unknown_is_rejected() {
        let args: WriteTodos =
            serde_json::from_value(serde_json::json!({"todos": [{"content": "x"}]})).unwrap();
        assert_eq!(args.todos[0].status, TodoStatus::Pending);
        assert!(
            serde_json::from_value::<WriteTodos>(
                serde_json::json!({"todos": [{"content": "x", "status": "nope"}]})
            )
            .is_err()
        );
    }
}
