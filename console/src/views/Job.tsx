import { JobLive } from "../components/JobLive";
import { endpointHref } from "../router";

export function JobView({ endpoint, id }: { endpoint: string; id: string }) {
  return (
    <>
      <nav aria-label="Breadcrumb" class="crumbs">
        <a href="#/">Endpoints</a> / <a href={endpointHref(endpoint)}>{endpoint}</a> /{" "}
        <span aria-current="page">{id}</span>
      </nav>
      <h1>
        Job <span class="mono">{id}</span>
      </h1>
      <section class="card">
        <JobLive endpoint={endpoint} id={id} />
      </section>
    </>
  );
}
