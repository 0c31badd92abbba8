import { ApiError } from "../api";
import { message } from "../format";

export function StatusBadge({ status }: { status: string }) {
  return <span class={`badge badge-${status.toLowerCase()}`}>{status}</span>;
}

/** An error of a call, with a hint when the key was refused. */
export function ErrorNote({ error, what }: { error: unknown; what: string }) {
  if (!error) return null;
  const refused = error instanceof ApiError && (error.status === 401 || error.status === 403);
  return (
    <p class="error" role="alert">
      {what}: {message(error)}
      {refused && " (use “Change key” to enter another key)"}
    </p>
  );
}
