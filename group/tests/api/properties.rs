//! Property test (proptest) of authorization: random users, groups, roles and operations (every
//! RPC of `group.v1`) against a model of who may do what, through the real group and auth
//! services over loopback on a real database. The service and the model must agree on every
//! answer and every membership, and "forbidden" must answer like "absent": whatever a caller
//! outside a group (or a deleted group) gets is exactly what it gets for a group that never
//! existed: code, message and details.
//!
//! Case counts are small to keep CI fast; run more with
//! `PROPTEST_CASES=300 cargo nextest run -p group --test api properties`.

use std::collections::{BTreeMap, BTreeSet};

use proptest::{prelude::*, sample::Index, test_runner::TestRunner};
use proto::group::v1::{self as pb, Role};
use sqlx::PgPool;
use tonic::{Code, Status};

use crate::helpers::{TestApp, TestUser, error_info, spawn_app_with, unknown_id};

const N_USERS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Create {
        actor: usize,
        members: u8,
    },
    Get {
        actor: usize,
        group: Index,
    },
    ListMine {
        actor: usize,
    },
    Rename {
        actor: usize,
        group: Index,
    },
    Delete {
        actor: usize,
        group: Index,
    },
    Add {
        actor: usize,
        group: Index,
        users: u8,
        role: Role,
    },
    Remove {
        actor: usize,
        group: Index,
        target: usize,
    },
    Leave {
        actor: usize,
        group: Index,
    },
    ChangeRole {
        actor: usize,
        group: Index,
        target: usize,
        role: Role,
    },
    ListMembers {
        actor: usize,
        group: Index,
    },
}

/// What the model says an operation answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Ok,
    /// The caller is not a member, or the group does not exist (any more).
    Absent,
    /// The caller is a member, the target is not.
    NoSuchMember,
    Denied,
    LastOwner,
}

/// Members and roles of each group a case created, by user index; `None` once deleted.
#[derive(Debug, Default)]
struct Model {
    groups: Vec<(String, Option<BTreeMap<usize, Role>>)>,
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Owner), Just(Role::Admin), Just(Role::Member)]
}

fn op() -> impl Strategy<Value = Op> {
    // Past `N_USERS`, a member of the op's group (see `Model::resolve`): most ops then come from
    // someone with a role in it, or target one.
    let user = 0..2 * N_USERS;
    let group = any::<Index>;
    prop_oneof![
        2 => (user.clone(), any::<u8>()).prop_map(|(actor, members)| Op::Create { actor, members }),
        1 => (user.clone(), group()).prop_map(|(actor, group)| Op::Get { actor, group }),
        1 => user.clone().prop_map(|actor| Op::ListMine { actor }),
        1 => (user.clone(), group()).prop_map(|(actor, group)| Op::Rename { actor, group }),
        1 => (user.clone(), group()).prop_map(|(actor, group)| Op::Delete { actor, group }),
        3 => (user.clone(), group(), 1..16_u8, role())
            .prop_map(|(actor, group, users, role)| Op::Add { actor, group, users, role }),
        2 => (user.clone(), group(), user.clone())
            .prop_map(|(actor, group, target)| Op::Remove { actor, group, target }),
        1 => (user.clone(), group()).prop_map(|(actor, group)| Op::Leave { actor, group }),
        3 => (user.clone(), group(), user.clone(), role()).prop_map(|(actor, group, target, role)| {
            Op::ChangeRole { actor, group, target, role }
        }),
        1 => (user.clone(), group()).prop_map(|(actor, group)| Op::ListMembers { actor, group }),
    ]
}

impl Op {
    /// The group it names, as drawn.
    fn group(&self) -> Option<Index> {
        match self {
            Op::Get { group, .. }
            | Op::Rename { group, .. }
            | Op::Delete { group, .. }
            | Op::Add { group, .. }
            | Op::Remove { group, .. }
            | Op::Leave { group, .. }
            | Op::ChangeRole { group, .. }
            | Op::ListMembers { group, .. } => Some(*group),
            Op::Create { .. } | Op::ListMine { .. } => None,
        }
    }
}

impl Model {
    /// `op` with its users resolved: a user index past `N_USERS` names a member of the op's
    /// group (when it has any), so that the roles drawn matter.
    fn resolve(&self, op: &Op) -> Op {
        let members = op.group().and_then(|group| self.members(self.pick(group)));
        let who = |user: &mut usize| {
            if *user >= N_USERS {
                *user = match members {
                    Some(members) if !members.is_empty() => {
                        let nth = (*user - N_USERS) % members.len();
                        *members.keys().nth(nth).expect("within the members")
                    }
                    _ => *user % N_USERS,
                };
            }
        };
        let mut op = op.clone();
        match &mut op {
            Op::Remove { actor, target, .. } | Op::ChangeRole { actor, target, .. } => {
                who(actor);
                who(target);
            }
            Op::Create { actor, .. }
            | Op::Get { actor, .. }
            | Op::ListMine { actor }
            | Op::Rename { actor, .. }
            | Op::Delete { actor, .. }
            | Op::Add { actor, .. }
            | Op::Leave { actor, .. }
            | Op::ListMembers { actor, .. } => who(actor),
        }
        op
    }

    /// The group an op names: one this case created (deleted ones included), or a group that
    /// never existed when there is none yet.
    fn pick(&self, group: Index) -> Option<usize> {
        (!self.groups.is_empty()).then(|| group.index(self.groups.len()))
    }

    fn members(&self, group: Option<usize>) -> Option<&BTreeMap<usize, Role>> {
        self.groups[group?].1.as_ref()
    }

    fn owners(members: &BTreeMap<usize, Role>) -> usize {
        members
            .values()
            .filter(|role| **role == Role::Owner)
            .count()
    }

    /// What `op` answers, by the rules of `group.proto`.
    fn expect(&self, op: &Op) -> Expected {
        use Expected::*;
        let (actor, group) = match op {
            Op::Create { .. } | Op::ListMine { .. } => return Ok,
            Op::Get { actor, group }
            | Op::Rename { actor, group }
            | Op::Delete { actor, group }
            | Op::Add { actor, group, .. }
            | Op::Remove { actor, group, .. }
            | Op::Leave { actor, group }
            | Op::ChangeRole { actor, group, .. }
            | Op::ListMembers { actor, group } => (*actor, self.pick(*group)),
        };
        let Some(members) = self.members(group) else {
            return Absent;
        };
        let Some(&mine) = members.get(&actor) else {
            return Absent;
        };
        let manages = matches!(mine, Role::Owner | Role::Admin);
        match op {
            Op::Get { .. } | Op::ListMembers { .. } => Ok,
            Op::Rename { .. } if manages => Ok,
            Op::Delete { .. } if mine == Role::Owner => Ok,
            Op::Rename { .. } | Op::Delete { .. } => Denied,
            Op::Add { role, .. } => match (mine, role) {
                (Role::Member, _) | (Role::Admin, Role::Owner | Role::Admin) => Denied,
                _ => Ok,
            },
            Op::Remove { target, .. } => match members.get(target) {
                _ if !manages => Denied,
                None => NoSuchMember,
                Some(Role::Owner | Role::Admin) if mine == Role::Admin => Denied,
                Some(Role::Owner) if Self::owners(members) == 1 => LastOwner,
                Some(_) => Ok,
            },
            Op::Leave { .. } if mine == Role::Owner && Self::owners(members) == 1 => LastOwner,
            Op::Leave { .. } => Ok,
            Op::ChangeRole { target, role, .. } => match members.get(target) {
                _ if mine != Role::Owner => Denied,
                None => NoSuchMember,
                Some(Role::Owner) if *role != Role::Owner && Self::owners(members) == 1 => {
                    LastOwner
                }
                Some(_) => Ok,
            },
            Op::Create { .. } | Op::ListMine { .. } => unreachable!("answered above"),
        }
    }
}

/// What the service answered, reduced to what the model predicts.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Done,
    /// A new group: its id, the caller's role and the member count.
    Created(String, Role, u32),
    /// A group as the caller sees it: its role and member count.
    Group(Role, u32),
    Added(BTreeSet<String>, u32),
    Members(BTreeMap<String, Role>),
    Mine(BTreeMap<String, Role>),
}

struct Case<'a> {
    app: &'a TestApp,
    users: &'a [TestUser],
    model: Model,
}

impl Case<'_> {
    fn ids(&self, mask: u8) -> Vec<String> {
        (0..N_USERS)
            .filter(|user| mask & (1 << user) != 0)
            .map(|user| self.users[user].id.clone())
            .collect()
    }

    /// Calls the RPC of `op` on `group_id`.
    async fn call(&self, op: &Op, group_id: &str) -> Result<Answer, Status> {
        let app = self.app;
        let user = |index: usize| &self.users[index];
        let group = |group: pb::Group| Answer::Group(group.my_role(), group.member_count);
        match op {
            Op::Create { actor, members } => {
                let members: Vec<&TestUser> = (0..N_USERS)
                    .filter(|u| members & (1 << u) != 0)
                    .map(user)
                    .collect();
                let created = app.create_group(user(*actor), "property", &members).await?;
                Ok(Answer::Created(
                    created.group_id.clone(),
                    created.my_role(),
                    created.member_count,
                ))
            }
            Op::Get { actor, .. } => app.get_group(user(*actor), group_id).await.map(group),
            Op::ListMine { actor } => {
                let listed = app.list_my_groups(user(*actor), 200, "").await?;
                Ok(Answer::Mine(
                    listed
                        .groups
                        .iter()
                        .map(|g| (g.group_id.clone(), g.my_role()))
                        .collect(),
                ))
            }
            Op::Rename { actor, .. } => app
                .rename(user(*actor), group_id, "renamed")
                .await
                .map(group),
            Op::Delete { actor, .. } => app
                .delete(user(*actor), group_id)
                .await
                .map(|()| Answer::Done),
            Op::Add {
                actor, users, role, ..
            } => {
                let added = app
                    .add_member_ids(user(*actor), group_id, self.ids(*users), *role)
                    .await?;
                let count = added.group.map_or(0, |group| group.member_count);
                Ok(Answer::Added(
                    added.added_user_ids.into_iter().collect(),
                    count,
                ))
            }
            Op::Remove { actor, target, .. } => app
                .remove(user(*actor), group_id, user(*target))
                .await
                .map(group),
            Op::Leave { actor, .. } => app
                .leave(user(*actor), group_id)
                .await
                .map(|()| Answer::Done),
            Op::ChangeRole {
                actor,
                target,
                role,
                ..
            } => app
                .change_role(user(*actor), group_id, user(*target), *role)
                .await
                .map(group),
            Op::ListMembers { actor, .. } => {
                let listed = app.list_members(user(*actor), group_id).await?;
                Ok(Answer::Members(
                    listed
                        .members
                        .iter()
                        .map(|m| (m.user.as_ref().unwrap().user_id.clone(), m.role()))
                        .collect(),
                ))
            }
        }
    }

    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let op = &self.model.resolve(op);
        let expected = self.model.expect(op);
        let group = op.group().and_then(|group| self.model.pick(group));
        let group_id = group.map_or_else(unknown_id, |group| self.model.groups[group].0.clone());

        let answer = self.call(op, &group_id).await;

        match expected {
            Expected::Ok => {
                let answer =
                    answer.map_err(|status| TestCaseError::fail(format!("{op:?}: {status:?}")))?;
                self.check_and_apply(op, group, answer)
            }
            Expected::Absent => {
                let status = refused(op, answer, Code::NotFound)?;
                // A group the caller is not in, or that was deleted, answers like one that
                // never existed.
                let never = self.call(op, &unknown_id()).await;
                let never = refused(op, never, Code::NotFound)?;
                prop_assert_eq!(status.message(), never.message(), "{:?}", op);
                prop_assert_eq!(status.details(), never.details(), "{:?}", op);
                Ok(())
            }
            Expected::NoSuchMember => refused(op, answer, Code::NotFound).map(drop),
            Expected::Denied => refused(op, answer, Code::PermissionDenied).map(drop),
            Expected::LastOwner => {
                let status = refused(op, answer, Code::FailedPrecondition)?;
                prop_assert_eq!(error_info(&status).0, "LAST_OWNER");
                Ok(())
            }
        }
    }

    /// Checks a successful answer against the model, then changes the model as the operation
    /// did.
    fn check_and_apply(
        &mut self,
        op: &Op,
        group: Option<usize>,
        answer: Answer,
    ) -> Result<(), TestCaseError> {
        let users = self.users;
        let index_of = |id: &str| users.iter().position(|user| user.id == id);
        match (op, answer) {
            (Op::Create { actor, members }, Answer::Created(id, role, count)) => {
                let mut roles: BTreeMap<usize, Role> = (0..N_USERS)
                    .filter(|u| members & (1 << u) != 0)
                    .map(|u| (u, Role::Member))
                    .collect();
                roles.insert(*actor, Role::Owner);
                prop_assert_eq!((role, count as usize), (Role::Owner, roles.len()));
                self.model.groups.push((id, Some(roles)));
            }
            (Op::ListMine { actor }, Answer::Mine(listed)) => {
                let expected: BTreeMap<String, Role> = self
                    .model
                    .groups
                    .iter()
                    .filter_map(|(id, members)| Some((id.clone(), *members.as_ref()?.get(actor)?)))
                    .collect();
                let ours: BTreeMap<String, Role> = listed
                    .into_iter()
                    .filter(|(id, _)| self.model.groups.iter().any(|(known, _)| known == id))
                    .collect();
                prop_assert_eq!(ours, expected);
            }
            (Op::Get { actor, .. } | Op::Rename { actor, .. }, Answer::Group(role, count)) => {
                let members = self.model.members(group).unwrap();
                prop_assert_eq!((role, count as usize), (members[actor], members.len()));
            }
            (Op::Delete { .. }, Answer::Done) => self.model.groups[group.unwrap()].1 = None,
            (
                Op::Add {
                    users: mask, role, ..
                },
                Answer::Added(added, count),
            ) => {
                let members = self.model.groups[group.unwrap()].1.as_mut().unwrap();
                let mut expected = BTreeSet::new();
                // Users already in the group are left as they are.
                for user in (0..N_USERS).filter(|u| mask & (1 << u) != 0) {
                    if let std::collections::btree_map::Entry::Vacant(entry) = members.entry(user) {
                        entry.insert(*role);
                        expected.insert(users[user].id.clone());
                    }
                }
                prop_assert_eq!(added, expected);
                prop_assert_eq!(count as usize, members.len());
            }
            (Op::Remove { target, .. }, Answer::Group(_, count)) => {
                let members = self.model.groups[group.unwrap()].1.as_mut().unwrap();
                members.remove(target);
                prop_assert_eq!(count as usize, members.len());
            }
            (Op::Leave { actor, .. }, Answer::Done) => {
                self.model.groups[group.unwrap()]
                    .1
                    .as_mut()
                    .unwrap()
                    .remove(actor);
            }
            (Op::ChangeRole { target, role, .. }, Answer::Group(_, count)) => {
                let members = self.model.groups[group.unwrap()].1.as_mut().unwrap();
                members.insert(*target, *role);
                prop_assert_eq!(count as usize, members.len());
            }
            (Op::ListMembers { .. }, Answer::Members(listed)) => {
                let listed: BTreeMap<usize, Role> = listed
                    .iter()
                    .map(|(id, role)| (index_of(id).unwrap(), *role))
                    .collect();
                prop_assert_eq!(Some(&listed), self.model.members(group));
            }
            (op, answer) => prop_assert!(false, "{op:?} answered {answer:?}"),
        }
        Ok(())
    }
}

/// The status of a refused call, which must have `code`.
fn refused(op: &Op, answer: Result<Answer, Status>, code: Code) -> Result<Status, TestCaseError> {
    match answer {
        Err(status) if status.code() == code => Ok(status),
        other => Err(TestCaseError::fail(format!(
            "{op:?}: expected {code:?}, got {other:?}"
        ))),
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_service_and_the_model_agree_on_who_may_do_what(db: PgPool) {
    // The users take part in every case: the groups-per-user limit is not what is tested here
    // (`limits.rs` is), and many cases would reach it.
    let app = spawn_app_with(db, |config| config.limits.max_groups_per_user = 1_000_000).await;
    let users = app.users("prop", N_USERS).await;
    let runtime = tokio::runtime::Handle::current();

    // proptest's runner is synchronous: it runs on a blocking thread and drives each case on
    // this test's runtime, whose thread serves auth and group meanwhile. Each case starts from
    // groups of its own.
    let outcome = tokio::task::spawn_blocking(move || {
        let config = testkit::property_config(64, file!());
        let ops = prop::collection::vec(op(), 1..40);
        TestRunner::new(config)
            .run(&ops, |ops| {
                runtime.block_on(async {
                    let mut case = Case {
                        app: &app,
                        users: &users,
                        model: Model::default(),
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
