// Helpers shared by the Node interop scripts: waiting on conditions, failing a scenario.
export const STEP_TIMEOUT_MS = 10_000;  // one join / leave / delivery wait

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Failure extends Error {}

export function check(condition, message) {
  if (!condition) throw new Failure(message);
}

/** Resolve when predicate() holds (polled), reject with `what` after timeoutMs. */
export async function waitFor(predicate, what, timeoutMs = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) {
      const text = typeof what === "function" ? what() : what;
      throw new Failure(`timed out after ${timeoutMs} ms waiting for ${text}`);
    }
    await sleep(5);
  }
}
