// Small DOM helpers shared by the page's modules.

import { ConnectError } from "@connectrpc/connect";

export const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

/** An error in words for the user (a gRPC status's message without its code prefix). */
export function errorText(error: unknown): string {
  if (error instanceof ConnectError) return error.rawMessage || error.message;
  return error instanceof Error ? error.message : String(error);
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

/** A button that asks once more before `action`: its label becomes `confirm` for a few seconds. */
export function confirmingButton(label: string, confirm: string, action: () => Promise<void>): HTMLButtonElement {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  let armed = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  button.onclick = async () => {
    if (!armed) {
      armed = true;
      button.textContent = confirm;
      button.dataset.armed = "true";
      timer = setTimeout(() => {
        armed = false;
        button.textContent = label;
        delete button.dataset.armed;
      }, 5000);
      return;
    }
    clearTimeout(timer);
    button.disabled = true;
    try {
      await action();
    } finally {
      button.disabled = false;
      armed = false;
      button.textContent = label;
      delete button.dataset.armed;
    }
  };
  return button;
}
