import { useEffect, useRef, useState } from "preact/hooks";
import { type RequestSummary, STATUSES, backoff, listRequests } from "../api";
import { duration, time } from "../format";
import { jobHref } from "../router";
import { ErrorNote, StatusBadge } from "./common";

const PAGE = 20;
const REFRESH_MS = 5000;
const MIN_GAP_MS = 1000;

interface Rows {
  rows: RequestSummary[];
  cursor?: string;
}

/**
 * The newest rows again (page one) followed by the older rows already loaded, so a refresh neither
 * drops the pages "More" loaded nor repeats a row.
 */
function merge(first: { requests: RequestSummary[]; nextCursor?: string }, old: Rows, pages: number): Rows {
  if (pages <= 1 || !first.nextCursor) return { rows: first.requests, cursor: first.nextCursor };
  const seen = new Set(first.requests.map((r) => r.id));
  const oldest = Date.parse(first.requests.at(-1)?.createdAt ?? "");
  const older = old.rows.filter((r) => !seen.has(r.id) && Date.parse(r.createdAt) <= oldest);
  return { rows: [...first.requests, ...older], cursor: old.cursor };
}

/** GET /requests: the endpoint's jobs, newest first, with a status filter, "More" and auto-refresh. */
export function RecentRequests({ endpoint, changes }: { endpoint: string; changes: number }) {
  const [status, setStatus] = useState("");
  const [auto, setAuto] = useState(true);
  const [state, setState] = useState<Rows | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [loadingMore, setLoadingMore] = useState(false);
  const pages = useRef(1);
  const notBefore = useRef(0);
  const statuses = status ? [status] : [];

  // Page one now, whenever the filter changes or a job changes, and every few seconds if asked to; but
  // not more than once a second, nor before a rate-limited call's Retry-After (/requests has a small
  // rate limit per endpoint).
  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const refresh = async () => {
      const started = Date.now();
      notBefore.current = started + MIN_GAP_MS;
      let wait = REFRESH_MS;
      try {
        const first = await listRequests(endpoint, { limit: PAGE, statuses });
        if (!live) return;
        setState((old) => merge(first, old ?? { rows: [] }, pages.current));
        setError(undefined);
      } catch (caught) {
        if (!live) return;
        setError(caught);
        wait = backoff(caught, REFRESH_MS);
        notBefore.current = Math.max(notBefore.current, started + wait);
      }
      if (live && auto) timer = setTimeout(refresh, wait);
    };
    timer = setTimeout(refresh, Math.max(0, notBefore.current - Date.now()));
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [endpoint, status, auto, changes]);

  const more = async () => {
    if (!state?.cursor) return;
    setLoadingMore(true);
    try {
      const page = await listRequests(endpoint, { limit: PAGE, cursor: state.cursor, statuses });
      pages.current += 1;
      setState((old) => {
        const rows = old?.rows ?? [];
        const seen = new Set(rows.map((r) => r.id));
        return { rows: [...rows, ...page.requests.filter((r) => !seen.has(r.id))], cursor: page.nextCursor };
      });
      setError(undefined);
    } catch (caught) {
      setError(caught);
    } finally {
      setLoadingMore(false);
    }
  };

  return (
    <section class="card" aria-labelledby="recent-title">
      <h2 id="recent-title">Recent requests</h2>
      <div class="toolbar">
        <label for="status-filter">Status</label>
        <select
          id="status-filter"
          value={status}
          onChange={(event) => {
            pages.current = 1;
            setState(undefined);
            setStatus(event.currentTarget.value);
          }}
        >
          <option value="">All statuses</option>
          {STATUSES.map((s) => (
            <option key={s} value={s}>
              {s}
            </option>
          ))}
        </select>
        <label class="check">
          <input type="checkbox" checked={auto} onChange={(event) => setAuto(event.currentTarget.checked)} />
          Auto-refresh
        </label>
      </div>
      <ErrorNote error={error} what="Could not list the requests" />
      {state && state.rows.length === 0 && <p class="hint">No requests{status && ` with status ${status}`}.</p>}
      {state && state.rows.length > 0 && (
        <div class="table-wrap">
          <table aria-label="Recent requests">
            <thead>
              <tr>
                <th scope="col">Job</th>
                <th scope="col">Status</th>
                <th scope="col">Kind</th>
                <th scope="col">Created</th>
                <th scope="col" class="num">Delay</th>
                <th scope="col" class="num">Execution</th>
                <th scope="col" class="num">Retries</th>
              </tr>
            </thead>
            <tbody>
              {state.rows.map((r) => (
                <tr key={r.id}>
                  <th scope="row">
                    <a class="mono" href={jobHref(endpoint, r.id)} title={r.id}>
                      {r.id}
                    </a>
                  </th>
                  <td>
                    <StatusBadge status={r.status} />
                  </td>
                  <td class="kind">
                    {r.kind}
                    {r.lowPriority && <span class="tag"> low priority</span>}
                  </td>
                  <td title={r.createdAt}>{time(r.createdAt)}</td>
                  <td class="num">{duration(r.delayTime)}</td>
                  <td class="num">{duration(r.executionTime)}</td>
                  <td class="num">{r.retries ?? 0}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {state?.cursor && (
        <button type="button" onClick={more} disabled={loadingMore}>
          {loadingMore ? "Loading…" : "More"}
        </button>
      )}
    </section>
  );
}
