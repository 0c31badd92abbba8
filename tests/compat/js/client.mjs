// Drives the official runpod-sdk JS client against jobwire and prints what it saw as one JSON line.
// Usage: node client.mjs BASE_URL API_KEY ENDPOINT SCENARIO   (BASE_URL like http://127.0.0.1:8080/v2)
import runpodSdk from "runpod-sdk";

const [baseUrl, apiKey, endpointId, scenario] = process.argv.slice(2);
const endpoint = runpodSdk(apiKey, { baseUrl }).endpoint(endpointId);
// runSync prints "id: STATUS" while it polls; keep stdout for the result only.
console.log = (...args) => process.stderr.write(args.join(" ") + "\n");

const scenarios = {
  async runSync() {
    return await endpoint.runSync({ input: { a: 20, b: 22 } }, 30000);
  },
  async runThenStatus() {
    const started = await endpoint.run({ input: { a: 1, b: 2 } });
    let status = await endpoint.status(started.id);
    while (!status.completed) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      status = await endpoint.status(started.id);
    }
    return { started, status };
  },
  async stream() {
    const started = await endpoint.run({ input: { tokens: ["x", "y", "z"] } });
    const chunks = [];
    for await (const chunk of endpoint.stream(started.id, 30000)) {
      chunks.push(chunk);
    }
    return { chunks };
  },
  async cancel() {
    const started = await endpoint.run({ input: { sleep: 60 } });
    let status = await endpoint.status(started.id);
    while (status.status !== "IN_PROGRESS") {
      await new Promise((resolve) => setTimeout(resolve, 20));
      status = await endpoint.status(started.id);
    }
    const cancelled = await endpoint.cancel(started.id);
    return { cancelled, after: await endpoint.status(started.id) };
  },
};

try {
  const result = await scenarios[scenario]();
  process.stdout.write(JSON.stringify(result) + "\n");
} catch (error) {
  process.stdout.write(JSON.stringify({ error: String(error), status: error?.response?.status }) + "\n");
  process.exit(1);
}
