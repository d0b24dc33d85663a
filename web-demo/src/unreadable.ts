// Messages of a conversation this device cannot read (not encrypted for it), as the CLI's
// client/src/unreadable.rs finds and words them: the page and the CLI say the same. No DOM and
// no other module, so that Node tests it (tests/unreadable.test.ts).

/**
 * A run of consecutive messages this device cannot read, as the CLI's `Unreadable`
 * (client/src/unreadable.rs): the server lists only the messages that carry a key wrapped for this
 * device, so the others are gaps in the conversation's sequences (1-based, gap-free). They are
 * explained in the conversation, never silently left out. What is counted is the server's word.
 */
export interface UnreadableRun {
  firstSequence: number;
  lastSequence: number;
  count: number;
  /** The run comes before every message this device can read: sent before the device existed
   * (else the sender did not encrypt them for it). */
  beforeThisDevice: boolean;
}

/**
 * The runs missing from `sequences` (the messages shown, any order): between them, before the
 * first when `completeBelow` (the history reached the conversation's start), and after the last up
 * to `lastSequence` (the conversation's, when known). As the CLI's `runs`.
 */
export function unreadableRuns(sequences: number[], completeBelow: boolean, lastSequence?: number): UnreadableRun[] {
  const sorted = [...new Set(sequences)].sort((a, b) => a - b);
  const runs: UnreadableRun[] = [];
  let previous: number | undefined = completeBelow ? 0 : undefined;
  let beforeThisDevice = true;
  const ends = lastSequence === undefined ? sorted : [...sorted, lastSequence + 1];
  for (const sequence of ends) {
    if (previous !== undefined && sequence > previous + 1) {
      runs.push({ firstSequence: previous + 1, lastSequence: sequence - 1, count: sequence - 1 - previous, beforeThisDevice });
    }
    beforeThisDevice = false;
    previous = previous === undefined ? sequence : Math.max(previous, sequence);
  }
  return runs;
}

/** A run in words: the CLI's sentence (`chat history`, `chat chat`), word for word. */
export function unreadableText(run: UnreadableRun): string {
  const [s, were] = run.count === 1 ? ["message was", "it was"] : ["messages were", "they were"];
  return run.beforeThisDevice
    ? `${run.count} earlier ${s} sent before this device existed and cannot be read here (${were} not encrypted for it)`
    : `${run.count} ${s} not encrypted for this device and cannot be read here`;
}
