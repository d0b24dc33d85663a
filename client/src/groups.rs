//! Groups and membership through the group service, and the memberships last shown to the user
//! (`groups.json`): a member the server adds or removes is reported as a [`MembershipWarning`]
//! before the next message to the group is sealed.

use std::collections::BTreeMap;

use proto::{auth::v1 as auth_pb, group::v1 as pb};
use serde::Serialize;

use crate::{
    Error, Result, Session,
    profile::GroupPin,
    warnings::{MembershipWarning, Warning},
};

/// A group as the user sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    /// The group id (also its conversation id).
    pub group_id: String,
    /// Its name.
    pub name: String,
    /// The user's role: `owner`, `admin` or `member`.
    pub role: &'static str,
    /// How many members it has.
    pub member_count: u32,
}

/// One member of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    /// The user id.
    pub user_id: String,
    /// The username.
    pub username: String,
    /// `owner`, `admin` or `member`.
    pub role: &'static str,
    /// How many keyed devices the member has.
    pub devices: usize,
}

impl Session {
    /// Creates a group with the given members (by username) besides the user, who owns it.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown username.
    pub async fn create_group(&self, name: &str, members: &[String]) -> Result<GroupInfo> {
        let member_user_ids = self.user_ids(members).await?;
        let request = pb::CreateGroupRequest {
            name: name.to_owned(),
            member_user_ids: member_user_ids.clone(),
        };
        let response = self
            .call(request, |request| {
                let mut group = self.group.clone();
                async move { group.create_group(request).await }
            })
            .await?;
        let group = group_info(response.group.unwrap_or_default());
        // The members are the ones asked for: any other the server lists later is reported.
        let added: Vec<(String, String)> = member_user_ids
            .into_iter()
            .zip(members.iter().cloned())
            .collect();
        self.note_members(&group.group_id, &group.name, &added, &[], true)?;
        Ok(group)
    }

    /// Renames a group (`#name` or id, see [`Session::resolve`]).
    ///
    /// # Errors
    /// [`Error::Auth`] when the session ended, [`Error::Unavailable`], or [`Error::Refused`].
    pub async fn rename_group(&self, group: &str, name: &str) -> Result<GroupInfo> {
        let group_id = self.find_group(group).await?.group_id;
        let request = pb::RenameGroupRequest {
            group_id,
            name: name.to_owned(),
        };
        let response = self
            .call(request, |request| {
                let mut group = self.group.clone();
                async move { group.rename_group(request).await }
            })
            .await?;
        Ok(group_info(response.group.unwrap_or_default()))
    }

    /// Adds members (by username) as plain members.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown username.
    pub async fn add_members(&self, group: &str, usernames: &[String]) -> Result<GroupInfo> {
        let found = self.find_group(group).await?;
        let user_ids = self.user_ids(usernames).await?;
        let request = pb::AddMembersRequest {
            group_id: found.group_id.clone(),
            user_ids: user_ids.clone(),
            role: pb::Role::Member as i32,
        };
        let response = self
            .call(request, |request| {
                let mut group = self.group.clone();
                async move { group.add_members(request).await }
            })
            .await?;
        let added: Vec<(String, String)> = user_ids
            .into_iter()
            .zip(usernames.iter().cloned())
            .collect();
        self.note_members(&found.group_id, &found.name, &added, &[], false)?;
        Ok(group_info(response.group.unwrap_or_default()))
    }

    /// Removes a member (by username).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown user or group.
    pub async fn remove_member(&self, group: &str, username: &str) -> Result<GroupInfo> {
        let found = self.find_group(group).await?;
        let user_id = self.user_ids(&[username.to_owned()]).await?.remove(0);
        let request = pb::RemoveMemberRequest {
            group_id: found.group_id.clone(),
            user_id: user_id.clone(),
        };
        let response = self
            .call(request, |request| {
                let mut group = self.group.clone();
                async move { group.remove_member(request).await }
            })
            .await?;
        self.note_members(&found.group_id, &found.name, &[], &[user_id], false)?;
        Ok(group_info(response.group.unwrap_or_default()))
    }

    /// Leaves a group.
    ///
    /// # Errors
    /// [`Error::Refused`] (FAILED_PRECONDITION) for the last owner.
    pub async fn leave_group(&self, group: &str) -> Result<()> {
        let group_id = self.find_group(group).await?.group_id;
        self.call(
            pb::LeaveGroupRequest {
                group_id: group_id.clone(),
            },
            |request| {
                let mut group = self.group.clone();
                async move { group.leave_group(request).await }
            },
        )
        .await?;
        self.forget_group(&group_id)
    }

    /// The members of a group.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown group.
    pub async fn group_members(&self, group: &str) -> Result<Vec<MemberInfo>> {
        let group_id = self.find_group(group).await?.group_id;
        Ok(self
            .list_members(&group_id)
            .await?
            .into_iter()
            .map(|member| {
                let user = member.user.unwrap_or_default();
                MemberInfo {
                    user_id: user.user_id,
                    username: user.username,
                    role: role_name(member.role),
                    devices: member.devices.len(),
                }
            })
            .collect())
    }

    /// The user's groups.
    ///
    /// # Errors
    /// [`Error::Auth`] when the session ended, [`Error::Unavailable`], or [`Error::Refused`].
    pub async fn groups(&self) -> Result<Vec<GroupInfo>> {
        let mut groups = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListMyGroupsRequest {
                page_size: 100,
                page_token: page_token.clone(),
            };
            let response = self
                .call(request, |request| {
                    let mut group = self.group.clone();
                    async move { group.list_my_groups(request).await }
                })
                .await?;
            groups.extend(response.groups.into_iter().map(group_info));
            if response.next_page_token.is_empty() {
                return Ok(groups);
            }
            page_token = response.next_page_token;
        }
    }

    /// One of the user's groups by id or by (unique) name; a leading `#` is ignored.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Usage`] when several groups have that name, listing each
    /// one's id and members.
    pub async fn find_group(&self, group: &str) -> Result<GroupInfo> {
        let wanted = group.strip_prefix('#').unwrap_or(group);
        let groups = self.groups().await?;
        if let Some(found) = groups.iter().find(|g| g.group_id == wanted) {
            return Ok(found.clone());
        }
        let mut named: Vec<GroupInfo> = groups.into_iter().filter(|g| g.name == wanted).collect();
        match named.len() {
            0 => Err(Error::not_found(format!("you have no group {wanted}"))),
            1 => Ok(named.remove(0)),
            _ => Err(Error::usage(self.ambiguous_group(wanted, &named).await?)),
        }
    }

    /// Why `#name` names no one group: each candidate's id and members, and how to pick one.
    async fn ambiguous_group(&self, name: &str, candidates: &[GroupInfo]) -> Result<String> {
        let mut lines = vec![format!(
            "{} of your groups are named {name}; pick one by its id, as '#<id>':",
            candidates.len()
        )];
        for candidate in candidates {
            let mut members: Vec<String> = self
                .list_members(&candidate.group_id)
                .await?
                .into_iter()
                .filter_map(|member| member.user.map(|user| user.username))
                .collect();
            members.sort();
            lines.push(format!(
                "  #{}  members: {}",
                candidate.group_id,
                members.join(", ")
            ));
        }
        lines.push(format!(
            "for example: chat send '#{}' <message>",
            candidates[0].group_id
        ));
        Ok(lines.join("\n"))
    }

    async fn user_ids(&self, usernames: &[String]) -> Result<Vec<String>> {
        let mut ids = Vec::with_capacity(usernames.len());
        for username in usernames {
            let user = self.user_by_name(username).await?;
            ids.push(user.user.unwrap_or_default().user_id);
        }
        Ok(ids)
    }
}

impl Session {
    /// Compares a group's members with the ones last shown, pins them, and reports a change.
    pub(crate) fn pin_members(
        &self,
        group_id: &str,
        group_name: &str,
        members: &[auth_pb::UserWithDevices],
    ) -> Result<()> {
        let current: BTreeMap<String, String> = members
            .iter()
            .filter_map(|member| member.user.as_ref())
            .map(|user| (user.user_id.clone(), user.username.clone()))
            .collect();
        let mut groups = self.profile.groups()?;
        let warning = match groups.get(group_id) {
            Some(pin) if pin.members == current => None,
            Some(pin) => Some(MembershipWarning {
                group_id: group_id.to_owned(),
                group_name: group_name.to_owned(),
                first_seen: false,
                added: names_not_in(&current, &pin.members),
                removed: names_not_in(&pin.members, &current),
            }),
            None => Some(MembershipWarning {
                group_id: group_id.to_owned(),
                group_name: group_name.to_owned(),
                first_seen: true,
                added: current
                    .iter()
                    .filter(|(user_id, _)| **user_id != self.account.user_id)
                    .map(|(_, username)| username.clone())
                    .collect(),
                removed: Vec::new(),
            }),
        };
        if warning.is_none() {
            return Ok(());
        }
        groups.insert(
            group_id.to_owned(),
            GroupPin {
                name: group_name.to_owned(),
                members: current,
            },
        );
        self.profile.save_groups(&groups)?;
        if let Some(warning) = warning {
            self.warn(Warning::MembershipWarning(warning));
        }
        Ok(())
    }

    /// Records a membership change the user made here (`created`: the group, with the user and
    /// `added` as its members), so that it is not reported back. A group never shown is left to
    /// its first review.
    pub(crate) fn note_members(
        &self,
        group_id: &str,
        group_name: &str,
        added: &[(String, String)],
        removed: &[String],
        created: bool,
    ) -> Result<()> {
        let mut groups = self.profile.groups()?;
        if created {
            groups.insert(
                group_id.to_owned(),
                GroupPin {
                    name: group_name.to_owned(),
                    members: BTreeMap::from([(
                        self.account.user_id.clone(),
                        self.account.username.clone(),
                    )]),
                },
            );
        }
        let Some(pin) = groups.get_mut(group_id) else {
            return Ok(());
        };
        pin.members.extend(added.iter().cloned());
        for user_id in removed {
            pin.members.remove(user_id);
        }
        self.profile.save_groups(&groups)
    }

    /// Forgets a group's pinned membership (the user left it).
    pub(crate) fn forget_group(&self, group_id: &str) -> Result<()> {
        let mut groups = self.profile.groups()?;
        if groups.remove(group_id).is_some() {
            self.profile.save_groups(&groups)?;
        }
        Ok(())
    }
}

fn names_not_in(these: &BTreeMap<String, String>, those: &BTreeMap<String, String>) -> Vec<String> {
    these
        .iter()
        .filter(|(user_id, _)| !those.contains_key(*user_id))
        .map(|(_, username)| username.clone())
        .collect()
}

fn group_info(group: pb::Group) -> GroupInfo {
    GroupInfo {
        role: role_name(group.my_role),
        group_id: group.group_id,
        name: group.name,
        member_count: group.member_count,
    }
}

fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Owner) => "owner",
        Ok(pb::Role::Admin) => "admin",
        Ok(pb::Role::Member) => "member",
        _ => "unknown",
    }
}
