//! A set of long-running tasks keyed by device id, each started from its config and replaced
//! when that config changes: what lets a bundle add, change or remove a camera or a probe while
//! the gateway runs.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Running<C> {
    config: C,
    token: CancellationToken,
    task: JoinHandle<()>,
}

pub struct TaskSet<C> {
    parent: CancellationToken,
    running: HashMap<String, Running<C>>,
}

/// How long a stopped task may take to finish (a camera says TEARDOWN).
const STOP_WAIT: Duration = Duration::from_secs(5);

impl<C: PartialEq + Clone> TaskSet<C> {
    pub fn new(parent: CancellationToken) -> Self {
        Self {
            parent,
            running: HashMap::new(),
        }
    }

    /// Stops the tasks whose id is gone or whose config changed, and returns the ids and
    /// configs that must be started (new or changed), after the old ones have ended.
    pub async fn stop_changed(&mut self, desired: &[(String, C)]) -> Vec<(String, C)> {
        let mut stopping = Vec::new();
        self.running.retain(|id, r| {
            let keep = desired.iter().any(|(d, c)| d == id && *c == r.config);
            if !keep {
                r.token.cancel();
                stopping.push(std::mem::replace(&mut r.task, tokio::spawn(async {})));
            }
            keep
        });
        for task in stopping {
            let _ = tokio::time::timeout(STOP_WAIT, task).await;
        }
        desired
            .iter()
            .filter(|(id, _)| !self.running.contains_key(id))
            .cloned()
            .collect()
    }

    /// Starts `id`'s task; it gets a token cancelled when it is replaced or the gateway stops.
    pub fn start<F>(&mut self, id: String, config: C, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.parent.child_token();
        let handle = tokio::spawn(task(token.clone()));
        self.running.insert(
            id,
            Running {
                config,
                token,
                task: handle,
            },
        );
    }

    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.running.keys()
    }

    /// Stops every task and waits for them.
    pub async fn stop_all(&mut self) {
        let all: Vec<_> = self.running.drain().map(|(_, r)| r).collect();
        for r in &all {
            r.token.cancel();
        }
        for r in all {
            let _ = tokio::time::timeout(STOP_WAIT, r.task).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn replaces_changed_tasks_and_keeps_the_others() {
        let stopped = Arc::new(AtomicUsize::new(0));
        let mut set = TaskSet::new(CancellationToken::new());
        let spawn = |set: &mut TaskSet<u32>, todo: Vec<(String, u32)>| {
            for (id, c) in todo {
                let stopped = stopped.clone();
                set.start(id, c, |t| async move {
                    t.cancelled().await;
                    stopped.fetch_add(1, Ordering::SeqCst);
                });
            }
        };
        let first = vec![("a".to_owned(), 1), ("b".to_owned(), 1)];
        let todo = set.stop_changed(&first).await;
        assert_eq!(todo.len(), 2);
        spawn(&mut set, todo);
        // b changes, a stays, c is new.
        let second = vec![
            ("a".to_owned(), 1),
            ("b".to_owned(), 2),
            ("c".to_owned(), 1),
        ];
        let mut todo = set.stop_changed(&second).await;
        todo.sort();
        assert_eq!(todo, [("b".to_owned(), 2), ("c".to_owned(), 1)]);
        assert_eq!(stopped.load(Ordering::SeqCst), 1);
        spawn(&mut set, todo);
        set.stop_all().await;
        assert_eq!(stopped.load(Ordering::SeqCst), 4);
    }
}
