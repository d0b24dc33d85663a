// The page's management screens: a group's members panel (roles shown; only the actions the
// user's role allows offered: add, remove, role changes, rename, delete, leave) and the devices
// screen (the user's devices; renaming any, revoking another one). Rendering and wiring only; the calls are in
// core.ts and the role rules in roles.ts.

import type { Core, DeviceView } from "./core";
import { $, confirmingButton, errorText, say } from "./dom";
import { Role, mayAdd, mayChangeRoles, mayDelete, mayLeave, mayRemove, mayRename, roleName } from "./roles";

/** What the members panel asks of the page. */
export interface MembersHost {
  /** The group is gone for this user (left or deleted here): close its conversation. */
  closed(message: string): void;
}

/** Renders the members panel of `groupId` into #panel (again after each change). */
export async function showMembers(core: Core, groupId: string, host: MembersHost): Promise<void> {
  const panel = $("panel");
  if (panel.hidden || panel.dataset.groupId !== groupId) {
    // Nothing of another panel may stay clickable while this one loads.
    panel.textContent = "Loading the members…";
    panel.hidden = false;
    panel.dataset.groupId = groupId;
  }
  const status = statusLine();
  let members;
  try {
    members = await core.groupMembers(groupId);
  } catch (error) {
    say(status, errorText(error), "error");
    panel.replaceChildren(status, closeRow());
    return;
  }
  const rerender = () => showMembers(core, groupId, host);
  // Runs a change; its refusal stays in the panel until the next change succeeds (a re-render).
  const act = (change: () => Promise<void>) => async () => {
    try {
      await change();
      await rerender();
    } catch (error) {
      say(status, errorText(error), "error");
    }
  };
  const mine = core.roleIn(groupId);
  const owners = members.filter((m) => core.roleIn(groupId, m.user!.userId) === Role.OWNER).length;
  const name = core.groupOf(groupId)?.name ?? "";

  const heading = document.createElement("div");
  heading.id = "members-heading";
  heading.textContent = `${members.length} ${members.length === 1 ? "member" : "members"}; you are ${article(mine)} ${roleName(mine)}.`;

  const list = document.createElement("ul");
  list.id = "member-list";
  list.className = "members";
  list.setAttribute("aria-label", "Members");
  for (const member of members) {
    const user = member.user!;
    const theirs = core.roleIn(groupId, user.userId);
    const me = user.userId === core.userId;
    const item = document.createElement("li");
    item.dataset.username = user.username;
    item.dataset.role = roleName(theirs);
    const label = document.createElement("span");
    label.textContent = me ? `${user.username} (you)` : user.username;
    const badge = document.createElement("span");
    badge.className = "role";
    badge.textContent = roleName(theirs);
    // An owner changes others' roles where the role is shown; everyone else sees a badge.
    if (!me && mayChangeRoles(mine)) item.append(label, roleSelect(user.username, theirs, act, (role) => core.changeRole(groupId, user.userId, role)));
    else item.append(label, badge);
    if (!me && mayRemove(mine, theirs, owners)) {
      const remove = document.createElement("button");
      remove.className = "link";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove ${user.username}`);
      remove.onclick = act(() => core.removeMember(groupId, user.userId));
      item.append(remove);
    }
    list.append(item);
  }

  const parts: HTMLElement[] = [heading, list];
  if (mayAdd(mine)) {
    parts.push(
      inputForm("member-add", "add a username", "Username to add", "Add", "", (value, input) =>
        act(async () => {
          await core.addMember(groupId, value);
          input.value = "";
        })(),
      ),
    );
  }
  if (mayRename(mine)) {
    parts.push(inputForm("group-rename", "group name", "New group name", "Rename", name, (value) => act(() => core.renameGroup(groupId, value))()));
  }
  const row = closeRow();
  if (mayLeave(mine, owners)) {
    const leave = confirmingButton(`leave/${groupId}`, "Leave group", "Leave? Click again", async () => {
      try {
        await core.leaveGroup(groupId);
        host.closed(`You left # ${name}.`);
      } catch (error) {
        say(status, errorText(error), "error");
      }
    });
    leave.id = "leave-group";
    row.prepend(leave);
  } else {
    const hint = document.createElement("p");
    hint.className = "hint muted";
    hint.textContent = "You are the only owner: make another member owner before leaving, or delete the group.";
    parts.push(hint);
  }
  if (mayDelete(mine)) {
    const remove = confirmingButton(`delete/${groupId}`, "Delete group", "Delete for everyone? Click again", async () => {
      try {
        await core.deleteGroup(groupId);
        host.closed(`You deleted # ${name}.`);
      } catch (error) {
        say(status, errorText(error), "error");
      }
    });
    remove.id = "delete-group";
    remove.className = "danger";
    row.prepend(remove);
  }
  parts.push(row, status);
  panel.replaceChildren(...parts);
}

/** The devices screen: the user's devices, each with "Rename", each but this one with "Revoke". */
export async function showDevices(core: Core, status = ""): Promise<void> {
  const list = $("device-list");
  let devices: DeviceView[];
  try {
    devices = await core.devices();
  } catch (error) {
    say("devices-status", errorText(error), "error");
    return;
  }
  say("devices-status", status);
  list.replaceChildren(
    ...devices.map((device) => {
      const item = document.createElement("li");
      item.dataset.deviceId = device.deviceId;
      item.dataset.current = String(device.current);
      const text = document.createElement("div");
      const name = document.createElement("div");
      name.className = "device-name";
      name.textContent = device.name || "unnamed device";
      const meta = document.createElement("div");
      meta.className = "device-meta";
      const added = device.createdAt ? `added ${day(device.createdAt)}` : "";
      const seen = device.lastSeenAt ? `last active ${day(device.lastSeenAt)}` : "";
      meta.textContent = [device.current ? "this device" : "", added, seen].filter(Boolean).join(" · ");
      text.append(name, meta);
      item.append(text, renameButton(core, device, name));
      if (!device.current) {
        const label = device.name || "this device";
        const revoke = confirmingButton(`revoke/${device.deviceId}`, "Revoke", "Revoke? Click again", async () => {
          try {
            await core.revokeDevice(device.deviceId);
            await showDevices(core, `${label} was revoked: it is logged out and gets no new messages.`);
          } catch (error) {
            say("devices-status", errorText(error), "error");
          }
        });
        revoke.className = "danger";
        revoke.setAttribute("aria-label", `Revoke ${label}`);
        item.append(revoke);
      }
      return item;
    }),
  );
}

/** "Rename": swaps the device's name for a form; the server's refusal shows in the screen's status. */
function renameButton(core: Core, device: DeviceView, name: HTMLElement): HTMLButtonElement {
  const label = device.name || "this device";
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Rename";
  button.setAttribute("aria-label", `Rename ${label}`);
  button.onclick = () => {
    const form = document.createElement("form");
    form.className = "rename-device";
    const input = document.createElement("input");
    input.value = device.name;
    input.maxLength = 64;
    input.placeholder = "e.g. work laptop";
    input.setAttribute("aria-label", `New name for ${label}`);
    const save = document.createElement("button");
    save.type = "submit";
    save.textContent = "Save";
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = "Cancel";
    const restore = () => {
      form.replaceWith(name);
      button.hidden = false;
    };
    cancel.onclick = restore;
    input.onkeydown = (event) => {
      if (event.key === "Escape") restore();
    };
    form.onsubmit = async (event) => {
      event.preventDefault();
      save.disabled = true;
      try {
        const renamed = await core.renameDevice(device.deviceId, input.value);
        await showDevices(core, `Renamed to ${renamed.name}.`);
      } catch (error) {
        say("devices-status", errorText(error), "error");
        save.disabled = false;
        input.focus();
      }
    };
    form.append(input, save, cancel);
    name.replaceWith(form);
    button.hidden = true;
    input.focus();
    input.select();
  };
  return button;
}

function day(at: Date): string {
  return at.toLocaleString([], { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
}

function article(role: Role): string {
  return role === Role.OWNER || role === Role.ADMIN ? "an" : "a";
}

function statusLine(): HTMLElement {
  const status = document.createElement("p");
  status.id = "panel-status";
  status.className = "status";
  status.setAttribute("role", "alert");
  return status;
}

function closeRow(): HTMLElement {
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "Close";
  close.onclick = () => ($("panel").hidden = true);
  const row = document.createElement("div");
  row.className = "row";
  row.append(close);
  return row;
}

function roleSelect(
  username: string,
  current: Role,
  act: (change: () => Promise<void>) => () => Promise<void>,
  change: (role: Role) => Promise<void>,
): HTMLSelectElement {
  const select = document.createElement("select");
  select.setAttribute("aria-label", `Role of ${username}`);
  for (const role of [Role.OWNER, Role.ADMIN, Role.MEMBER]) {
    const option = document.createElement("option");
    option.value = String(role);
    option.textContent = roleName(role);
    option.selected = role === current;
    select.append(option);
  }
  select.onchange = () => void act(() => change(Number(select.value) as Role))();
  return select;
}

function inputForm(
  id: string,
  placeholder: string,
  label: string,
  button: string,
  value: string,
  submit: (value: string, input: HTMLInputElement) => Promise<void>,
): HTMLFormElement {
  const form = document.createElement("form");
  form.id = id;
  form.className = "row";
  const input = document.createElement("input");
  input.placeholder = placeholder;
  input.value = value;
  input.required = true;
  input.setAttribute("aria-label", label);
  const submitButton = document.createElement("button");
  submitButton.textContent = button;
  form.append(input, submitButton);
  form.onsubmit = (event) => {
    event.preventDefault();
    void submit(input.value.trim(), input);
  };
  return form;
}
