import { useEffect, useState } from "preact/hooks";
import { ApiError, type Job, backoff, cancelJob, canCancel, canRetry, followJob, isTerminal, jobStatus, retryJob } from "../api";
import { duration, json, message, splitError } from "../format";
import { ErrorNote, StatusBadge } from "./common";

const POLL_MS = 1000;

/**
 * A job as it runs: its status (polled while it has not ended), its streamed output (followed over
 * `/stream/{id}:follow`), and its result or error once it ends; Cancel and Retry when they apply.
 */
export function JobLive({ endpoint, id, onChange }: { endpoint: string; id: string; onChange?: () => void }) {
  const [job, setJob] = useState<Job | undefined>(undefined);
  const [chunks, setChunks] = useState<unknown[]>([]);
  const [error, setError] = useState<unknown>(undefined);
  const [streamError, setStreamError] = useState<unknown>(undefined);
  const [actionError, setActionError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);
  // Bumped by a retry: the job runs again, so following and polling start over.
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const abort = new AbortController();
    let ended = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    setChunks([]);
    setStreamError(undefined);

    const poll = async () => {
      try {
        const view = await jobStatus(endpoint, id);
        if (abort.signal.aborted || ended) return;
        setJob(view);
        setError(undefined);
        if (isTerminal(view.status)) return; // the stream's final view (or this one) is the last word
      } catch (caught) {
        if (abort.signal.aborted) return;
        setError(caught);
        // A refused key or an unknown job stays so; a rate limit or a network error passes.
        const final =
          caught instanceof ApiError && caught.status >= 400 && caught.status < 500 && caught.status !== 429;
        if (!final) timer = setTimeout(poll, backoff(caught, POLL_MS));
        return;
      }
      timer = setTimeout(poll, POLL_MS);
    };

    const follow = async () => {
      try {
        for await (const event of followJob(endpoint, id, abort.signal)) {
          if ("chunk" in event) {
            setChunks((seen) => [...seen, event.chunk.output]);
          } else {
            ended = true;
            clearTimeout(timer);
            setJob(event.done);
            setError(undefined);
            onChange?.();
          }
        }
      } catch (caught) {
        if (abort.signal.aborted) return;
        // Polling carries on; only the live output is lost.
        setStreamError(caught);
      }
    };

    void poll();
    void follow();
    return () => {
      abort.abort();
      clearTimeout(timer);
    };
  }, [endpoint, id, attempt]);

  const act = async (action: typeof cancelJob) => {
    setBusy(true);
    setActionError(undefined);
    try {
      const view = await action(endpoint, id);
      setJob(view);
      if (!isTerminal(view.status)) setAttempt((n) => n + 1);
      onChange?.();
    } catch (caught) {
      setActionError(caught);
    } finally {
      setBusy(false);
    }
  };

  const status = job?.status;
  return (
    <div class="job" aria-busy={!job}>
      <ErrorNote error={error} what="Could not read the job" />
      {job && (
        <>
          <dl class="facts">
            <div>
              <dt>Status</dt>
              <dd aria-live="polite" data-testid="job-status">
                <StatusBadge status={job.status} />
              </dd>
            </div>
            <div>
              <dt>Delay time</dt>
              <dd>{duration(job.delayTime)}</dd>
            </div>
            <div>
              <dt>Execution time</dt>
              <dd>{duration(job.executionTime)}</dd>
            </div>
            <div>
              <dt>Retries</dt>
              <dd>{job.retries ?? 0}</dd>
            </div>
            <div>
              <dt>Worker</dt>
              <dd>{job.workerId ?? "–"}</dd>
            </div>
          </dl>
          <div class="actions">
            {status && canCancel(status) && (
              <button type="button" class="danger" disabled={busy} onClick={() => act(cancelJob)}>
                Cancel job
              </button>
            )}
            {status && canRetry(status) && (
              <button type="button" disabled={busy} onClick={() => act(retryJob)}>
                Retry job
              </button>
            )}
          </div>
          <ErrorNote error={actionError} what="The action failed" />
        </>
      )}
      {(chunks.length > 0 || (job && !isTerminal(job.status))) && (
        <section aria-labelledby={`stream-${id}`}>
          <h3 id={`stream-${id}`}>Streamed output</h3>
          {chunks.length === 0 ? (
            <p class="hint">No output streamed yet.</p>
          ) : (
            <ol class="chunks" aria-label="Streamed output chunks">
              {chunks.map((chunk, index) => (
                <li key={index}>
                  <code>{JSON.stringify(chunk)}</code>
                </li>
              ))}
            </ol>
          )}
          {streamError !== undefined && <p class="hint">The live stream stopped: {message(streamError)}</p>}
        </section>
      )}
      {job?.output !== undefined && (
        <section aria-labelledby={`output-${id}`}>
          <h3 id={`output-${id}`}>{isTerminal(job.status) ? "Result" : "Progress"}</h3>
          <pre class="output" aria-labelledby={`output-${id}`}>{json(job.output)}</pre>
        </section>
      )}
      {job?.error !== undefined && (
        <section aria-labelledby={`error-${id}`}>
          <h3 id={`error-${id}`}>Error</h3>
          <ErrorDetail error={job.error} />
        </section>
      )}
    </div>
  );
}

function ErrorDetail({ error }: { error: string }) {
  const { summary, traceback } = splitError(error);
  return (
    <>
      <pre class="output failed">{summary}</pre>
      {traceback && (
        <details>
          <summary>Traceback</summary>
          <pre class="output">{traceback}</pre>
        </details>
      )}
    </>
  );
}
