// Small DOM helpers shared by the page's modules.

import { ConnectError } from "@connectrpc/connect";

export const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

/** An error in words for the user (a gRPC status's message without its code prefix). */
export function errorText(error: unknown): string {
  const message =
    error instanceof ConnectError ? error.rawMessage || error.message : error instanceof Error ? error.message : String(error);
  // What Chromium, Firefox and Safari say of a request that never reached the gateway.
  if (/^(Failed to fetch|NetworkError when attempting to fetch resource\.?|Load failed)$/.test(message)) {
    return typeof navigator !== "undefined" && !navigator.onLine
      ? "this browser has no network"
      : "the server cannot be reached; try again shortly";
  }
  return message;
}

/**
 * Shows `text` in a status line of the panel it concerns (each panel has its own, so an error
 * appears where the user acted): an error in the error colour, anything else plainly. An empty
 * text clears the line, as the next action that succeeds does.
 */
export function say(line: HTMLElement | string, text: string, kind: "error" | "info" = "info"): void {
  const element = typeof line === "string" ? $(line) : line;
  element.textContent = text;
  if (text && kind === "error") element.dataset.kind = "error";
  else delete element.dataset.kind;
}

/** Buttons waiting for their second click, by key, until when (a re-render keeps them so). */
const armedUntil = new Map<string, number>();
const ARMED_MS = 5000;

/**
 * A button that asks once more before `action`: its label becomes `confirm` for a few seconds.
 * `key` names what it does (e.g. "leave/<group id>"), so that a button rendered again meanwhile
 * (a panel refreshed by an event) is still waiting for its second click.
 */
export function confirmingButton(key: string, label: string, confirm: string, action: () => Promise<void>): HTMLButtonElement {
  const button = document.createElement("button");
  button.type = "button";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const show = () => {
    const armed = (armedUntil.get(key) ?? 0) > Date.now();
    button.textContent = armed ? confirm : label;
    if (armed) button.dataset.armed = "true";
    else delete button.dataset.armed;
    return armed;
  };
  if (show()) timer = setTimeout(show, armedUntil.get(key)! - Date.now());
  button.onclick = async () => {
    if (!show()) {
      armedUntil.set(key, Date.now() + ARMED_MS);
      show();
      timer = setTimeout(show, ARMED_MS);
      return;
    }
    clearTimeout(timer);
    armedUntil.delete(key);
    button.disabled = true;
    try {
      await action();
    } finally {
      button.disabled = false;
      show();
    }
  };
  return button;
}
