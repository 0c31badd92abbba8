import { useState } from "preact/hooks";
import { listEndpoints } from "../api";
import { ErrorNote } from "../components/common";
import { usePolled } from "../hooks";
import { endpointHref } from "../router";

const REFRESH_MS = 3000;

export function EndpointsView() {
  const endpoints = usePolled(listEndpoints, [], REFRESH_MS);
  const [name, setName] = useState("");

  return (
    <>
      <h1>Endpoints</h1>
      <ErrorNote error={endpoints.error} what="Could not list the endpoints" />
      {endpoints.data && endpoints.data.length === 0 && <p>This key sees no endpoint.</p>}
      {endpoints.data && endpoints.data.length > 0 && (
        <div class="table-wrap">
          <table aria-label="Endpoints">
            <thead>
              <tr>
                <th scope="col">Endpoint</th>
                <th scope="col" class="num">In queue</th>
                <th scope="col" class="num">In progress</th>
                <th scope="col" class="num">Completed</th>
                <th scope="col" class="num">Failed</th>
                <th scope="col" class="num">Workers idle</th>
                <th scope="col" class="num">Workers running</th>
              </tr>
            </thead>
            <tbody>
              {endpoints.data.map(({ name, health }) => (
                <tr key={name}>
                  <th scope="row">
                    <a href={endpointHref(name)}>{name}</a>
                  </th>
                  <td class="num" data-label="In queue">{health.jobs.inQueue}</td>
                  <td class="num" data-label="In progress">{health.jobs.inProgress}</td>
                  <td class="num" data-label="Completed">{health.jobs.completed}</td>
                  <td class="num" data-label="Failed">{health.jobs.failed}</td>
                  <td class="num" data-label="Workers idle">{health.workers.idle}</td>
                  <td class="num" data-label="Workers running">{health.workers.running}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <form
        class="inline"
        onSubmit={(event) => {
          event.preventDefault();
          if (name.trim()) location.hash = endpointHref(name.trim());
        }}
      >
        <label for="open-endpoint">Open an endpoint by name</label>
        <input id="open-endpoint" value={name} onInput={(event) => setName(event.currentTarget.value)} />
        <button type="submit">Open</button>
      </form>
    </>
  );
}
