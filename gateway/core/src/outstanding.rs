//! Requests a websocket session has sent on shell and control that the kernel has not answered
//! yet. A disconnected session keeps its sockets (and what arrives on them) only while it is owed
//! a reply: once every request has been answered, nothing more can arrive for it on shell,
//! control or stdin, and its three sockets can close until the session comes back.

use std::collections::VecDeque;

/// The unanswered requests of one session, by `msg_id`, oldest first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outstanding {
    ids: VecDeque<String>,
}

impl Outstanding {
    /// Requests remembered at most. Beyond it the oldest is forgotten: a session a thousand
    /// requests ahead of its kernel is not waiting for that one any more.
    pub const LIMIT: usize = 1024;

    /// A message the session sent: a `*_request` with an id is owed a reply.
    pub fn sent(&mut self, msg_type: &str, msg_id: &str) {
        if msg_id.is_empty() || !msg_type.ends_with("_request") {
            return;
        }
        if self.ids.len() >= Self::LIMIT {
            self.ids.pop_front();
        }
        self.ids.push_back(msg_id.to_owned());
    }

    /// A message the kernel sent the session on shell or control: a `*_reply` settles the
    /// request named by its parent.
    pub fn received(&mut self, msg_type: &str, parent_id: Option<&str>) {
        if !msg_type.ends_with("_reply") {
            return;
        }
        if let Some(parent) = parent_id
            && let Some(i) = self.ids.iter().position(|id| id == parent)
        {
            self.ids.remove(i);
        }
    }

    /// Every request answered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// The kernel went away (restart): nothing it owed will come.
    pub fn clear(&mut self) {
        self.ids.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Step {
        Sent(&'static str, &'static str),
        Got(&'static str, Option<&'static str>),
    }
    use Step::*;

    #[test]
    fn requests_are_settled_by_their_replies() {
        // (steps, requests still owed)
        let table: &[(&[Step], usize)] = &[
            (&[], 0),
            (&[Sent("execute_request", "a")], 1),
            (
                &[
                    Sent("execute_request", "a"),
                    Got("execute_reply", Some("a")),
                ],
                0,
            ),
            // Replies out of order, and a reply to a request of someone else.
            (
                &[
                    Sent("execute_request", "a"),
                    Sent("complete_request", "b"),
                    Got("complete_reply", Some("b")),
                    Got("execute_reply", Some("x")),
                ],
                1,
            ),
            // Messages that owe nothing: no reply comes for them.
            (
                &[
                    Sent("comm_msg", "c"),
                    Sent("comm_close", "d"),
                    Sent("input_reply", "e"),
                    Sent("execute_request", ""),
                ],
                0,
            ),
            // Only replies settle: a stray message with the request as parent does not.
            (
                &[Sent("execute_request", "a"), Got("comm_msg", Some("a"))],
                1,
            ),
            (
                &[Sent("execute_request", "a"), Got("execute_reply", None)],
                1,
            ),
            // The same id twice is owed twice.
            (
                &[
                    Sent("kernel_info_request", "k"),
                    Sent("kernel_info_request", "k"),
                    Got("kernel_info_reply", Some("k")),
                ],
                1,
            ),
            (
                &[
                    Sent("interrupt_request", "i"),
                    Sent("shutdown_request", "s"),
                    Got("interrupt_reply", Some("i")),
                    Got("shutdown_reply", Some("s")),
                ],
                0,
            ),
        ];
        for (n, (steps, owed)) in table.iter().enumerate() {
            let mut o = Outstanding::default();
            for step in *steps {
                match step {
                    Sent(t, id) => o.sent(t, id),
                    Got(t, parent) => o.received(t, *parent),
                }
            }
            assert_eq!(o.len(), *owed, "row {n}");
            assert_eq!(o.is_empty(), *owed == 0, "row {n}");
        }
    }

    #[test]
    fn the_oldest_request_is_forgotten_beyond_the_limit() {
        let mut o = Outstanding::default();
        for i in 0..=Outstanding::LIMIT {
            o.sent("execute_request", &i.to_string());
        }
        assert_eq!(o.len(), Outstanding::LIMIT);
        o.received("execute_reply", Some("0"));
        assert_eq!(
            o.len(),
            Outstanding::LIMIT,
            "request 0 was already forgotten"
        );
        o.received("execute_reply", Some("1"));
        assert_eq!(o.len(), Outstanding::LIMIT - 1);
        o.clear();
        assert!(o.is_empty());
    }
}
