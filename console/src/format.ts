export function duration(ms: number | undefined): string {
  if (ms === undefined || ms === null) return "–";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/** A timestamp in local time: the time of day alone when it is today. */
export function time(iso: string | undefined, now = new Date()): string {
  if (!iso) return "–";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toDateString() === now.toDateString() ? date.toLocaleTimeString() : date.toLocaleString();
}

/**
 * An error as the worker reported it, split into a summary and a traceback when it is the JSON document
 * that Runpod's SDKs send (`error_type`, `error_message`, `error_traceback`); otherwise the text itself.
 */
export function splitError(error: string): { summary: string; traceback?: string } {
  try {
    const parsed: unknown = JSON.parse(error);
    if (parsed && typeof parsed === "object" && "error_message" in parsed) {
      const { error_type: type, error_message: text, error_traceback: traceback } = parsed as Record<string, unknown>;
      const name = typeof type === "string" ? type.replace(/^<class '(.*)'>$/, "$1") : "";
      return {
        summary: name ? `${name}: ${String(text)}` : String(text),
        traceback: typeof traceback === "string" ? traceback : undefined,
      };
    }
    if (parsed && typeof parsed === "object") return { summary: JSON.stringify(parsed, null, 2) };
  } catch {
    // plain text
  }
  return { summary: error };
}

/** Pretty JSON for output and chunks; strings stay as they are. */
export function json(value: unknown): string {
  if (typeof value === "string") return value;
  return JSON.stringify(value, null, 2) ?? "null";
}

export function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
