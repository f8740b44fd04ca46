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

/**
 * An XMLHttpRequest over fetch, for phoenix.js's LongPoll under Node (1.7's Ajax needs one;
 * 1.8 prefers it to fetch). `requests` counts what was sent; `hold()` keeps new requests
 * back until `release()`, as a client that pauses between polls (a sleeping laptop).
 */
export const requests = {GET: 0, POST: 0, OPTIONS: 0, undefinedToken: 0, inFlight: 0, held: 0};
let heldBack = null;
export function hold() { heldBack = heldBack || []; }
export function release() { const queued = heldBack || []; heldBack = null; queued.forEach((go) => go()); }

export class FetchXMLHttpRequest {
  constructor() { this.readyState = 0; this.status = 0; this.responseText = ""; this.headers = {}; }
  open(method, url) { this.method = method; this.url = url; this.readyState = 1; }
  setRequestHeader(name, value) { this.headers[name] = value; }
  abort() { this.aborted = true; this.controller?.abort(); }
  send(body) {
    const go = () => {
      if (this.aborted) return;
      requests[this.method] = (requests[this.method] || 0) + 1;
      if (/[?&]token=undefined(&|$)/.test(this.url)) requests.undefinedToken++;
      requests.inFlight++;
      this.controller = new AbortController();
      const timer = this.timeout ? setTimeout(() => { this.timedOut = true; this.controller.abort(); }, this.timeout) : null;
      fetch(this.url, {method: this.method, headers: this.headers, body: body ?? undefined,
                       signal: this.controller.signal})
        .then(async (response) => {
          this.status = response.status;
          this.responseText = await response.text();
          this.readyState = 4;
          this.onreadystatechange?.();
        })
        .catch(() => {
          if (this.timedOut) this.ontimeout?.();
          else if (!this.aborted) this.onerror?.();
        })
        .finally(() => { requests.inFlight--; clearTimeout(timer); });
    };
    if (heldBack) { requests.held++; heldBack.push(go); } else { go(); }
  }
}
