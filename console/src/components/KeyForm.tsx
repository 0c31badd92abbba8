import { useState } from "preact/hooks";

/** Asks for the API key once; it is kept in this tab's sessionStorage only. */
export function KeyForm({ onKey }: { onKey: (key: string) => void }) {
  const [value, setValue] = useState("");
  return (
    <section class="card narrow" aria-labelledby="key-title">
      <h1 id="key-title">Sign in with an API key</h1>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          if (value.trim()) onKey(value.trim());
        }}
      >
        <label for="api-key">API key</label>
        <input
          id="api-key"
          type="password"
          autocomplete="off"
          spellcheck={false}
          required
          value={value}
          onInput={(event) => setValue(event.currentTarget.value)}
          aria-describedby="api-key-help"
        />
        <p id="api-key-help" class="hint">
          A client key sees its own endpoint, an admin key sees all of them. The key stays in this browser tab
          (sessionStorage) and is sent as <code>Authorization: Bearer …</code> with every request.
        </p>
        <button type="submit">Use key</button>
      </form>
    </section>
  );
}
