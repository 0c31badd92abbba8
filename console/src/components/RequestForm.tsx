import { useState } from "preact/hooks";
import { type Policy, runJob } from "../api";
import { jobHref } from "../router";
import { JobLive } from "./JobLive";
import { ErrorNote } from "./common";

const EXAMPLE = '{\n  "prompt": "hello"\n}';

/** The input as JSON, or the reason it is not valid. */
function parseInput(text: string): { ok: true; value: unknown } | { ok: false; reason: string } {
  if (!text.trim()) return { ok: false, reason: "The input is empty: enter a JSON value." };
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (error) {
    return { ok: false, reason: `Not valid JSON: ${error instanceof Error ? error.message : error}` };
  }
}

/** A non-negative whole number of milliseconds, undefined when blank, or null when invalid. */
function parseMs(text: string): number | undefined | null {
  if (!text.trim()) return undefined;
  const value = Number(text);
  return Number.isInteger(value) && value >= 0 ? value : null;
}

/** Submits a test job (POST /run) and follows it. */
export function RequestForm({ endpoint, onChange }: { endpoint: string; onChange: () => void }) {
  const [input, setInput] = useState(EXAMPLE);
  const [timeout, setTimeoutText] = useState("");
  const [ttl, setTtl] = useState("");
  const [lowPriority, setLowPriority] = useState(false);
  const [touched, setTouched] = useState(false);
  const [submitting, setSubmitting] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const [jobId, setJobId] = useState<string | undefined>(undefined);

  const parsed = parseInput(input);
  const timeoutMs = parseMs(timeout);
  const ttlMs = parseMs(ttl);
  const inputInvalid = touched && !parsed.ok;
  const valid = parsed.ok && timeoutMs !== null && ttlMs !== null;

  const submit = async (event: Event) => {
    event.preventDefault();
    setTouched(true);
    if (!parsed.ok || !valid) return;
    const policy: Policy = {};
    if (timeoutMs !== undefined) policy.executionTimeout = timeoutMs;
    if (ttlMs !== undefined) policy.ttl = ttlMs;
    if (lowPriority) policy.lowPriority = true;
    setSubmitting(true);
    setError(undefined);
    try {
      const job = await runJob(endpoint, parsed.value, Object.keys(policy).length ? policy : undefined);
      setJobId(job.id);
      onChange();
    } catch (caught) {
      setError(caught);
    } finally {
      setSubmitting(false);
    }
  };

  return (
    <section class="card" aria-labelledby="submit-title">
      <h2 id="submit-title">Submit a test job</h2>
      <form onSubmit={submit} noValidate>
        <label for="job-input">Input (JSON)</label>
        <textarea
          id="job-input"
          rows={6}
          spellcheck={false}
          value={input}
          aria-invalid={inputInvalid}
          aria-describedby={inputInvalid ? "job-input-error" : "job-input-help"}
          onInput={(event) => {
            setInput(event.currentTarget.value);
            setTouched(true);
          }}
        />
        {inputInvalid && !parsed.ok ? (
          <p id="job-input-error" class="field-error" role="alert">
            {parsed.reason}
          </p>
        ) : (
          <p id="job-input-help" class="hint">
            Sent as the job's <code>input</code>.
          </p>
        )}
        <fieldset>
          <legend>Policy (optional)</legend>
          <div class="row">
            <div>
              <label for="policy-timeout">Execution timeout (ms)</label>
              <input
                id="policy-timeout"
                inputMode="numeric"
                value={timeout}
                aria-invalid={timeoutMs === null}
                onInput={(event) => setTimeoutText(event.currentTarget.value)}
              />
            </div>
            <div>
              <label for="policy-ttl">TTL (ms)</label>
              <input
                id="policy-ttl"
                inputMode="numeric"
                value={ttl}
                aria-invalid={ttlMs === null}
                onInput={(event) => setTtl(event.currentTarget.value)}
              />
            </div>
          </div>
          {(timeoutMs === null || ttlMs === null) && (
            <p class="field-error" role="alert">
              Timeouts are whole numbers of milliseconds.
            </p>
          )}
          <label class="check">
            <input
              type="checkbox"
              checked={lowPriority}
              onChange={(event) => setLowPriority(event.currentTarget.checked)}
            />
            Low priority
          </label>
        </fieldset>
        <button type="submit" disabled={submitting || (touched && !valid)}>
          {submitting ? "Submitting…" : "Run"}
        </button>
      </form>
      <ErrorNote error={error} what="The job was not submitted" />
      {jobId && (
        <section class="submitted" aria-label="Submitted job">
          <h3>
            Job <a href={jobHref(endpoint, jobId)}>{jobId}</a>
          </h3>
          <JobLive key={jobId} endpoint={endpoint} id={jobId} onChange={onChange} />
        </section>
      )}
    </section>
  );
}
