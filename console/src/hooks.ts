import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, backoff } from "./api";

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

/**
 * Loads `load()` now, whenever `deps` change and every `refreshMs` (when given), keeping the last data
 * while a refresh is under way. A refused key (401, 403) stops the refreshing; a rate-limited call (429)
 * waits for the server's Retry-After.
 */
export function usePolled<T>(load: () => Promise<T>, deps: unknown[], refreshMs?: number): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const latest = useRef(load);
  latest.current = load;

  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      setLoading(true);
      let stop = false;
      let wait = refreshMs ?? 0;
      try {
        const value = await latest.current();
        if (!live) return;
        setData(value);
        setError(undefined);
      } catch (caught) {
        if (!live) return;
        setError(caught);
        stop = caught instanceof ApiError && (caught.status === 401 || caught.status === 403);
        wait = backoff(caught, wait);
      }
      setLoading(false);
      if (refreshMs && !stop) timer = setTimeout(run, wait);
    };
    void run();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [...deps, refreshMs, tick]);

  return { data, error, loading, reload: () => setTick((t) => t + 1) };
}
