// What a member of a group may do, by role: the group service's rules (proto/group/v1/group.proto),
// so that the page offers only the actions the server would accept. The server still decides; a
// refusal (the rules changed, or a role changed meanwhile) is shown in the members panel.

import { Role } from "./gen/group/v1/group_pb";

export { Role };

/** A role in words, as the page shows it. */
export function roleName(role: Role): string {
  return role === Role.OWNER ? "owner" : role === Role.ADMIN ? "admin" : "member";
}

/** Owners and admins rename the group and add members. */
export function mayRename(mine: Role): boolean {
  return mine === Role.OWNER || mine === Role.ADMIN;
}

export function mayAdd(mine: Role): boolean {
  return mayRename(mine);
}

/** Only owners delete the group and change roles. */
export function mayDelete(mine: Role): boolean {
  return mine === Role.OWNER;
}

export function mayChangeRoles(mine: Role): boolean {
  return mine === Role.OWNER;
}

/** Owners remove anyone (but the last owner); admins remove plain members only. */
export function mayRemove(mine: Role, theirs: Role, owners: number): boolean {
  if (mine === Role.OWNER) return theirs !== Role.OWNER || owners > 1;
  return mine === Role.ADMIN && theirs === Role.MEMBER;
}

/** Everyone may leave but the last owner (who hands ownership on or deletes the group). */
export function mayLeave(mine: Role, owners: number): boolean {
  return mine !== Role.OWNER || owners > 1;
}
