//! Property test (proptest) of chat's authorization: random users, group and direct
//! conversations with random participants, and random sends, history reads and
//! acknowledgements, against the real auth, group and chat services over loopback. Participants
//! are answered as the model says (a send gets the next sequence, history is every message
//! wrapped for the reader); anyone else gets exactly what a conversation that never existed
//! gets: code, message and details, the conversation id aside.
//!
//! Memberships do not change within a case (chat follows group's changes asynchronously; the
//! group tests and `groups.rs` cover changes). Case counts are small to keep CI fast; run more
//! with `PROPTEST_CASES=200 cargo nextest run -p chat --test api properties`.

use std::{collections::HashMap, sync::Mutex};

use proptest::{prelude::*, sample::Index, test_runner::TestRunner};
use proto::chat::v1 as pb;
use sqlx::PgPool;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::{
    groups::create_group,
    helpers::{TestApp, TestDevice, spawn_app},
};

const N_USERS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    /// A group owned by `owner` with the users of the mask.
    Group { owner: usize, members: u8 },
    /// A direct conversation between two users (or a user and themselves: refused).
    Direct { from: usize, to: usize },
    /// `actor` seals a message for the conversation's participants and sends it.
    Send { actor: usize, conversation: Index },
    /// `actor` lists the conversation's history.
    History { actor: usize, conversation: Index },
    /// `actor` acknowledges the conversation's first message.
    Acknowledge { actor: usize, conversation: Index },
}

/// A conversation of the case: its id, its participants and who sent each message.
#[derive(Debug)]
struct Conversation {
    id: String,
    participants: Vec<usize>,
    /// Each message's sender, and whether it was alone (its own device the only recipient).
    senders: Vec<(usize, bool)>,
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..N_USERS;
    prop_oneof![
        1 => (user.clone(), any::<u8>()).prop_map(|(owner, members)| Op::Group { owner, members }),
        1 => (user.clone(), user.clone()).prop_map(|(from, to)| Op::Direct { from, to }),
        3 => (user.clone(), any::<Index>())
            .prop_map(|(actor, conversation)| Op::Send { actor, conversation }),
        3 => (user.clone(), any::<Index>())
            .prop_map(|(actor, conversation)| Op::History { actor, conversation }),
        1 => (user.clone(), any::<Index>())
            .prop_map(|(actor, conversation)| Op::Acknowledge { actor, conversation }),
    ]
}

struct Case<'a> {
    app: &'a TestApp,
    users: &'a [TestDevice],
    conversations: Vec<Conversation>,
    /// The senders of every direct conversation's messages: a pair has one direct conversation
    /// for the whole test, which earlier cases may have written to.
    directs: &'a Mutex<HashMap<String, Vec<(usize, bool)>>>,
}

impl Case<'_> {
    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Group { owner, members } => {
                let members: Vec<&TestDevice> = (0..N_USERS)
                    .filter(|user| user != owner && members & (1 << user) != 0)
                    .map(|user| &self.users[user])
                    .collect();
                let id = create_group(self.app, &self.users[*owner], &members).await;
                let mut participants: Vec<usize> = (0..N_USERS)
                    .filter(|user| {
                        members
                            .iter()
                            .any(|m| m.user_id == self.users[*user].user_id)
                    })
                    .collect();
                participants.push(*owner);
                self.conversations.push(Conversation {
                    id,
                    participants,
                    senders: Vec::new(),
                });
            }
            Op::Direct { from, to } => {
                let request = self.users[*from].request(pb::OpenDirectConversationRequest {
                    peer_user_id: self.users[*to].user_id.clone(),
                });
                let opened = self.users[*from]
                    .chat
                    .clone()
                    .open_direct_conversation(request)
                    .await;
                if from == to {
                    prop_assert!(opened.is_err(), "a direct conversation with oneself");
                    return Ok(());
                }
                let id = opened
                    .unwrap()
                    .into_inner()
                    .conversation
                    .unwrap()
                    .conversation_id;
                if !self.conversations.iter().any(|c| c.id == id) {
                    let senders = lock(self.directs).entry(id.clone()).or_default().clone();
                    self.conversations.push(Conversation {
                        id,
                        participants: vec![*from, *to],
                        senders,
                    });
                }
            }
            Op::Send {
                actor,
                conversation,
            }
            | Op::History {
                actor,
                conversation,
            }
            | Op::Acknowledge {
                actor,
                conversation,
            } => {
                if self.conversations.is_empty() {
                    return Ok(());
                }
                let index = conversation.index(self.conversations.len());
                let participant = self.conversations[index].participants.contains(actor);
                let answer = self.call(op, *actor, index, None).await;
                if participant {
                    self.check(op, *actor, index, answer)?;
                } else {
                    let refused = answer.expect_err("an outsider is refused");
                    let never = self
                        .call(op, *actor, index, Some(Uuid::now_v7().to_string()))
                        .await;
                    let never = never.expect_err("a conversation that never existed");
                    prop_assert_eq!(refused.code(), Code::NotFound, "{:?}: {:?}", op, refused);
                    let id = &self.conversations[index].id;
                    prop_assert_eq!(refused.code(), never.code(), "{:?}", op);
                    prop_assert_eq!(
                        refused.message().replace(id.as_str(), "<id>"),
                        without_ids(never.message()),
                        "{:?}",
                        op
                    );
                    prop_assert_eq!(refused.details(), never.details(), "{:?}", op);
                }
            }
        }
        Ok(())
    }

    /// Calls the RPC of `op` as `actor` on conversation `index`, or on `other_id` (with the
    /// same recipients) when given.
    async fn call(
        &self,
        op: &Op,
        actor: usize,
        index: usize,
        other_id: Option<String>,
    ) -> Result<u64, Status> {
        let conversation = &self.conversations[index];
        let id = other_id.unwrap_or_else(|| conversation.id.clone());
        let device = &self.users[actor];
        match op {
            Op::Send { .. } => {
                let user_ids: Vec<&str> = conversation
                    .participants
                    .iter()
                    .map(|u| self.users[*u].user_id.as_str())
                    .collect();
                let mut recipients = device.recipients(&user_ids).await;
                if recipients.is_empty() {
                    // Alone in a group: a message needs a recipient, so the sending device is one.
                    recipients.push(e2ee::RecipientDevice {
                        device_id: device.device_id.clone(),
                        encryption_spki: device.keys.public_keys().encryption_spki.clone(),
                    });
                }
                let envelope =
                    device.seal(&id, &Uuid::new_v4().to_string(), &recipients, "property");
                device.send(envelope).await.map(|sent| sent.sequence)
            }
            Op::History { .. } => {
                let listed = device
                    .list_messages(&id, pb::Direction::Forward, 0, 200)
                    .await?;
                Ok(listed.messages.len() as u64)
            }
            Op::Acknowledge { .. } => device.acknowledge(&id, 1, 1).await.map(|_| 0),
            Op::Group { .. } | Op::Direct { .. } => unreachable!("not a call on a conversation"),
        }
    }

    fn check(
        &mut self,
        op: &Op,
        actor: usize,
        index: usize,
        answer: Result<u64, Status>,
    ) -> Result<(), TestCaseError> {
        let answer = answer.map_err(|status| TestCaseError::fail(format!("{op:?}: {status:?}")))?;
        let conversation = &mut self.conversations[index];
        match op {
            Op::Send { .. } => {
                let alone = conversation.participants.iter().all(|user| *user == actor);
                conversation.senders.push((actor, alone));
                if let Some(senders) = lock(self.directs).get_mut(&conversation.id) {
                    senders.push((actor, alone));
                }
                prop_assert_eq!(answer, conversation.senders.len() as u64);
            }
            // A device reads what was wrapped for it: everyone's messages, its own only when it
            // was alone (otherwise the sending device is not among the recipients here).
            Op::History { .. } => {
                let expected = conversation
                    .senders
                    .iter()
                    .filter(|(sender, alone)| *sender != actor || *alone)
                    .count();
                prop_assert_eq!(answer, expected as u64);
            }
            _ => {}
        }
        Ok(())
    }
}

/// `message` with any UUID replaced, as the refusal of a real conversation is compared.
fn without_ids(message: &str) -> String {
    message
        .split(' ')
        .map(|word| {
            let trimmed = word.trim_matches(|c: char| !c.is_ascii_hexdigit() && c != '-');
            if Uuid::parse_str(trimmed).is_ok() {
                word.replace(trimmed, "<id>")
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[sqlx::test(migrations = "../migrations")]
async fn participants_are_served_and_outsiders_are_answered_as_for_no_conversation(db: PgPool) {
    let app = spawn_app(db).await;
    let mut users = Vec::new();
    for name in ["ann", "ben", "cat", "dan"] {
        users.push(app.user(name).await);
    }
    let runtime = tokio::runtime::Handle::current();
    let directs = Mutex::new(HashMap::new());

    // As in the group's property test: the runner on a blocking thread, the services on this
    // test's runtime. Each case starts from conversations of its own.
    let outcome = tokio::task::spawn_blocking(move || {
        let config = testkit::property_config(32, file!());
        let ops = prop::collection::vec(op(), 1..25);
        TestRunner::new(config)
            .run(&ops, |ops| {
                runtime.block_on(async {
                    let mut case = Case {
                        app: &app,
                        users: &users,
                        conversations: Vec::new(),
                        directs: &directs,
                    };
                    for op in &ops {
                        case.apply(op).await?;
                    }
                    Ok(())
                })
            })
            .map_err(|error| error.to_string())
    })
    .await
    .unwrap();

    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
