// The HTTP API the console uses: Runpod's /v2/{endpoint}/... routes and jobwire's /v1 listings.
// Every call carries the API key entered once per browser session (sessionStorage, never a cookie).

const KEY_STORAGE = "jobwire.apiKey";

export function storedKey(): string | null {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function storeKey(key: string | null): void {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

export type JobStatus =
  | "IN_QUEUE"
  | "IN_PROGRESS"
  | "COMPLETED"
  | "FAILED"
  | "CANCELLED"
  | "TIMED_OUT";

export const STATUSES: readonly JobStatus[] = [
  "IN_QUEUE",
  "IN_PROGRESS",
  "COMPLETED",
  "FAILED",
  "CANCELLED",
  "TIMED_OUT",
];

export const isTerminal = (status: string): boolean =>
  status !== "IN_QUEUE" && status !== "IN_PROGRESS";
export const canCancel = (status: string): boolean => !isTerminal(status);
export const canRetry = (status: string): boolean => status === "FAILED" || status === "TIMED_OUT";

/** A job as /status, /cancel, /retry and the end of a followed stream return it. */
export interface Job {
  id: string;
  status: JobStatus;
  delayTime?: number;
  executionTime?: number;
  output?: unknown;
  error?: string;
  retries?: number;
  workerId?: string;
}

export interface Health {
  jobs: { completed: number; failed: number; inProgress: number; inQueue: number; retried: number };
  workers: { idle: number; running: number; [state: string]: number };
}

export interface EndpointSummary {
  name: string;
  health: Health;
}

/** One row of an endpoint's recent requests. */
export interface RequestSummary {
  id: string;
  status: JobStatus;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  delayTime?: number;
  executionTime?: number;
  retries?: number;
  kind: "run" | "runsync";
  lowPriority?: boolean;
  workerId?: string;
}

export interface RequestPage {
  requests: RequestSummary[];
  nextCursor?: string;
}

export interface Policy {
  executionTimeout?: number;
  ttl?: number;
  lowPriority?: boolean;
}

/**
 * An API answer other than 2xx; `status` 0 when the server could not be reached. A rate-limited call
 * (429) carries the server's Retry-After, in milliseconds.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** How long to wait before calling again after `error`: the server's Retry-After, else `normalMs`. */
export function backoff(error: unknown, normalMs: number): number {
  return error instanceof ApiError && error.retryAfterMs ? Math.max(normalMs, error.retryAfterMs) : normalMs;
}

function headers(): HeadersInit {
  const key = storedKey();
  return {
    Accept: "application/json",
    "Content-Type": "application/json",
    ...(key ? { Authorization: `Bearer ${key}` } : {}),
  };
}

async function errorOf(response: Response): Promise<ApiError> {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body: unknown = await response.json();
    if (body && typeof body === "object" && "error" in body && typeof body.error === "string") {
      message = body.error;
    }
  } catch {
    // not JSON: keep the status line
  }
  const retryAfter = Number(response.headers.get("Retry-After"));
  if (response.status === 429) message = `rate limited: ${message}`;
  return new ApiError(response.status, message, retryAfter > 0 ? retryAfter * 1000 : undefined);
}

async function send(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (error) {
    if (error instanceof DOMException && error.name === "AbortError") throw error;
    throw new ApiError(0, "the server could not be reached");
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  return (await (await send(method, path, body)).json()) as T;
}

const v2 = (endpoint: string, rest: string): string => `/v2/${encodeURIComponent(endpoint)}/${rest}`;

export const health = (endpoint: string): Promise<Health> => call("GET", v2(endpoint, "health"));

export const runJob = (endpoint: string, input: unknown, policy?: Policy): Promise<{ id: string; status: JobStatus }> =>
  call("POST", v2(endpoint, "run"), policy ? { input, policy } : { input });

export const jobStatus = (endpoint: string, id: string): Promise<Job> =>
  call("GET", v2(endpoint, `status/${encodeURIComponent(id)}`));

export const cancelJob = (endpoint: string, id: string): Promise<Job> =>
  call("POST", v2(endpoint, `cancel/${encodeURIComponent(id)}`));

export const retryJob = (endpoint: string, id: string): Promise<Job> =>
  call("POST", v2(endpoint, `retry/${encodeURIComponent(id)}`));

/** The endpoints the key may see (all of them for an admin key), with their health. */
export async function listEndpoints(): Promise<EndpointSummary[]> {
  const body = await call<{ endpoints?: EndpointSummary[] }>("GET", "/v1/endpoints");
  return body.endpoints ?? [];
}

/** One page of an endpoint's requests, newest first; `statuses` empty means all. */
export function listRequests(
  endpoint: string,
  options: { limit?: number; cursor?: string; statuses?: readonly string[] } = {},
): Promise<RequestPage> {
  const query = new URLSearchParams();
  query.set("limit", String(options.limit ?? 20));
  if (options.cursor) query.set("cursor", options.cursor);
  for (const status of options.statuses ?? []) query.append("status", status);
  return call("GET", `${v2(endpoint, "requests")}?${query}`);
}

export type StreamEvent = { chunk: { seq: number; output: unknown } } | { done: Job };

/**
 * Follows a job's streamed output (`/stream/{id}:follow`, NDJSON): every chunk from `fromSeq` in order,
 * then the job's final view. An in-band error line (the stream already answered 200) throws ApiError.
 */
export async function* followJob(
  endpoint: string,
  id: string,
  signal: AbortSignal,
  fromSeq = 0,
): AsyncGenerator<StreamEvent> {
  const query = fromSeq > 0 ? `?fromSeq=${fromSeq}` : "";
  const response = await send("GET", v2(endpoint, `stream/${encodeURIComponent(id)}:follow${query}`), undefined, signal);
  if (!response.body) throw new ApiError(0, "the stream has no body");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (value) buffered += value;
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (!line) continue;
        const message = JSON.parse(line) as { result?: StreamEvent; error?: { code: number; message: string } };
        if (message.error) throw new ApiError(500, message.error.message);
        if (message.result) yield message.result;
      }
      if (done) return;
    }
  } finally {
    reader.releaseLock();
  }
}
