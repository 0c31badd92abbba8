// Builds the console into the Python package, which serves it at /console/ (jobwire.server.console).
// The output is committed; scripts/test rebuilds it and fails when it differs.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const outDir = fileURLToPath(new URL("../server/jobwire/server/console/static", import.meta.url));

export default defineConfig({
  // Relative URLs: the page works at /console/ and behind a proxy that adds a prefix.
  base: "./",
  build: {
    outDir,
    emptyOutDir: true,
    assetsDir: "assets",
    // One small bundle; no inlined module-preload polyfill (every supported browser has it).
    modulePreload: { polyfill: false },
    target: "es2022",
    reportCompressedSize: false,
  },
  server: {
    // `npm run dev`: the console with hot reload, against a jobwire on 127.0.0.1:8080 (scripts/dev).
    host: "127.0.0.1",
    proxy: { "/v1": "http://127.0.0.1:8080", "/v2": "http://127.0.0.1:8080" },
  },
});
