// Hash routes, so the server only ever serves index.html at /console/:
//   #/                               endpoints
//   #/endpoints/{name}               one endpoint: request form and recent requests
//   #/endpoints/{name}/jobs/{id}     one job
import { useEffect, useState } from "preact/hooks";

export type Route =
  | { view: "endpoints" }
  | { view: "endpoint"; endpoint: string }
  | { view: "job"; endpoint: string; id: string };

export function parse(hash: string): Route {
  const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "endpoints" && parts.length === 2) return { view: "endpoint", endpoint: parts[1] };
  if (parts[0] === "endpoints" && parts.length === 4 && parts[2] === "jobs") {
    return { view: "job", endpoint: parts[1], id: parts[3] };
  }
  return { view: "endpoints" };
}

export const endpointHref = (endpoint: string): string => `#/endpoints/${encodeURIComponent(endpoint)}`;
export const jobHref = (endpoint: string, id: string): string =>
  `${endpointHref(endpoint)}/jobs/${encodeURIComponent(id)}`;

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parse(location.hash));
  useEffect(() => {
    const changed = () => setRoute(parse(location.hash));
    addEventListener("hashchange", changed);
    return () => removeEventListener("hashchange", changed);
  }, []);
  return route;
}
