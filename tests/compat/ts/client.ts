// A TypeScript gRPC client of jobwire built only on the generated stubs (gen/ts, staged as ./gen by
// test_ts_client.py) and Connect's gRPC transport. Prints one JSON document of what the calls returned.
//
//     tsx client.ts http://127.0.0.1:50051 KEY ENDPOINT
import { toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { JobStatus } from "./gen/jobwire/v1/job_pb.js";
import { HealthResponseSchema, JobService } from "./gen/jobwire/v1/jobs_pb.js";

const [baseUrl, key, endpointId] = process.argv.slice(2);
if (!baseUrl || !key || !endpointId) {
  throw new Error("usage: client.ts GRPC_BASE_URL KEY ENDPOINT");
}
const client = createClient(JobService, createGrpcTransport({ baseUrl }));
const headers = { authorization: `Bearer ${key}` };

/** The gRPC status code name a call fails with, or "OK". */
async function codeOf(call: Promise<unknown>): Promise<string> {
  try {
    await call;
    return "OK";
  } catch (error) {
    return Code[ConnectError.from(error).code];
  }
}

const input = new TextEncoder().encode(JSON.stringify({ prompt: "hello from TypeScript", n: 42 }));
const run = await client.run({ endpointId, job: { input, policy: { ttl: 60_000 } } }, { headers });
if (run.job === undefined) {
  throw new Error("Run returned no job");
}
const status = await client.status({ endpointId, jobId: run.job.id }, { headers });
const health = await client.health({ endpointId }, { headers });

console.log(
  JSON.stringify({
    run: { id: run.job.id, status: JobStatus[run.job.status] },
    status: { id: status.job?.id, status: status.job ? JobStatus[status.job.status] : null },
    health: toJson(HealthResponseSchema, health, { alwaysEmitImplicit: true }),
    missingJob: await codeOf(client.status({ endpointId, jobId: "no-such-job" }, { headers })),
    badKey: await codeOf(client.health({ endpointId }, { headers: { authorization: "Bearer nope" } })),
  }),
);
