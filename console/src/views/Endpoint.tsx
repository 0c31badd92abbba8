import { useState } from "preact/hooks";
import { health } from "../api";
import { ErrorNote } from "../components/common";
import { RecentRequests } from "../components/RecentRequests";
import { RequestForm } from "../components/RequestForm";
import { usePolled } from "../hooks";

const REFRESH_MS = 3000;

export function EndpointView({ endpoint }: { endpoint: string }) {
  // Bumped when a job is submitted or changes, so the figures and the recent requests show it at once.
  const [changes, setChanges] = useState(0);
  const figures = usePolled(() => health(endpoint), [endpoint, changes], REFRESH_MS);
  const changed = () => setChanges((n) => n + 1);
  const h = figures.data;

  return (
    <>
      <nav aria-label="Breadcrumb" class="crumbs">
        <a href="#/">Endpoints</a> / <span aria-current="page">{endpoint}</span>
      </nav>
      <h1>{endpoint}</h1>
      <ErrorNote error={figures.error} what="Could not read the endpoint's health" />
      {h && (
        <dl class="facts" aria-label="Health">
          <div>
            <dt>In queue</dt>
            <dd data-testid="in-queue">{h.jobs.inQueue}</dd>
          </div>
          <div>
            <dt>In progress</dt>
            <dd>{h.jobs.inProgress}</dd>
          </div>
          <div>
            <dt>Completed</dt>
            <dd>{h.jobs.completed}</dd>
          </div>
          <div>
            <dt>Failed</dt>
            <dd>{h.jobs.failed}</dd>
          </div>
          <div>
            <dt>Retried</dt>
            <dd>{h.jobs.retried}</dd>
          </div>
          <div>
            <dt>Workers idle</dt>
            <dd>{h.workers.idle}</dd>
          </div>
          <div>
            <dt>Workers running</dt>
            <dd>{h.workers.running}</dd>
          </div>
        </dl>
      )}
      <div class="columns">
        <RequestForm endpoint={endpoint} onChange={changed} />
        <RecentRequests endpoint={endpoint} changes={changes} />
      </div>
    </>
  );
}
