import { useState } from "preact/hooks";
import { storeKey, storedKey } from "./api";
import { KeyForm } from "./components/KeyForm";
import { useRoute } from "./router";
import { EndpointView } from "./views/Endpoint";
import { EndpointsView } from "./views/Endpoints";
import { JobView } from "./views/Job";

export function App() {
  const [key, setKey] = useState(storedKey);
  const route = useRoute();

  const useKey = (value: string | null) => {
    storeKey(value);
    setKey(value);
  };

  return (
    <>
      <header class="top">
        <a class="brand" href="#/">
          jobwire <span>console</span>
        </a>
        {key && (
          <nav aria-label="Session">
            <button type="button" class="link" onClick={() => useKey(null)}>
              Change key
            </button>
          </nav>
        )}
      </header>
      <main>
        {!key ? (
          <KeyForm onKey={useKey} />
        ) : route.view === "endpoint" ? (
          <EndpointView key={route.endpoint} endpoint={route.endpoint} />
        ) : route.view === "job" ? (
          <JobView key={`${route.endpoint}/${route.id}`} endpoint={route.endpoint} id={route.id} />
        ) : (
          <EndpointsView />
        )}
      </main>
    </>
  );
}
