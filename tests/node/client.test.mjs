// A backend team's Node.js client of the public API, straight from protos/:
// @grpc/proto-loader reads the .proto files, @grpc/grpc-js makes the calls, and
// protobufjs decodes the rich error (google.rpc.Status → ErrorInfo) from the
// `grpc-status-details-bin` trailer. Run by tests/e2e/test_node_client.py
// against the shared stack; reads where it is and what to index from the env.

import assert from "node:assert/strict";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const PROTOS = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "protos");
const INCLUDE = [PROTOS, join(PROTOS, "third_party")];

function required(name) {
  const value = process.env[name];
  // Never skip: a test run without the stack's addresses is a broken run.
  assert.ok(value, `${name} must be set (tests/e2e/test_node_client.py sets it)`);
  return value;
}

const ORCHESTRATOR = required("VECTOROPS_ORCHESTRATOR_ADDRESS");
const INDEXER = required("VECTOROPS_INDEXER_ADDRESS");
const TOKEN = required("VECTOROPS_TOKEN");
const SOURCE_DIR = required("VECTOROPS_NODE_SOURCE_DIR");
const MODEL = process.env.VECTOROPS_NODE_MODEL || "sentence-transformers/all-MiniLM-L6-v2";

// Field names as in the .proto files, enums as their names, 64-bit ints as strings.
const definition = protoLoader.loadSync(
  [
    "vectorops/orchestrator/v1/collection_service.proto",
    "vectorops/orchestrator/v1/operation_service.proto",
    "vectorops/indexer/v1/search_service.proto",
  ],
  { includeDirs: INCLUDE, keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
);
const api = grpc.loadPackageDefinition(definition).vectorops;

const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${TOKEN}`);
const credentials = grpc.credentials.createInsecure();
const collections = new api.orchestrator.v1.CollectionService(ORCHESTRATOR, credentials);
const operations = new api.orchestrator.v1.OperationService(ORCHESTRATOR, credentials);
const search = new api.indexer.v1.SearchService(INDEXER, credentials);

function deadline(seconds) {
  return new Date(Date.now() + seconds * 1000);
}

function unary(client, method, request, seconds = 30) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: deadline(seconds) }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

function watch(operationId, seconds = 240) {
  return new Promise((resolve, reject) => {
    const updates = [];
    const stream = operations.WatchOperation({ operation_id: operationId }, metadata, {
      deadline: deadline(seconds),
    });
    stream.on("data", (response) => updates.push(response.operation));
    stream.on("error", reject);
    stream.on("end", () => resolve(updates));
  });
}

// google.rpc.Status and its details, from the vendored protos/third_party/google/rpc.
const rpcTypes = new protobuf.Root();
rpcTypes.resolvePath = (_origin, target) =>
  INCLUDE.map((dir) => join(dir, target)).find((path) => existsSync(path)) ?? target;
rpcTypes.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const Status = rpcTypes.lookupType("google.rpc.Status");
const ErrorInfo = rpcTypes.lookupType("google.rpc.ErrorInfo");

function errorInfo(error) {
  const [raw] = error.metadata.get("grpc-status-details-bin");
  assert.ok(raw, `no grpc-status-details-bin trailer on ${error.code}: ${error.details}`);
  const status = Status.decode(raw);
  assert.equal(status.code, error.code);
  const detail = status.details.find((any) => any.type_url.endsWith("/google.rpc.ErrorInfo"));
  assert.ok(detail, "no ErrorInfo in the status details");
  return ErrorInfo.toObject(ErrorInfo.decode(detail.value));
}

const FILES = {
  "volcanoes.txt":
    "Volcanoes form where molten rock from the mantle rises through cracks in the crust. " +
    "An eruption throws out lava, ash and gases.",
  "sourdough.md":
    "# Baking sourdough bread\n\nA starter of flour and water ferments with wild yeast. " +
    "Fold the dough, let it proof overnight, then bake the loaf in a hot oven.",
};

test("create a collection from a directory, watch it, search it", async () => {
  mkdirSync(SOURCE_DIR, { recursive: true });
  for (const [name, text] of Object.entries(FILES)) writeFileSync(join(SOURCE_DIR, name), text);

  const created = await unary(collections, "CreateCollection", {
    request_id: randomUUID(),
    collection: {
      name: `node-${randomUUID().slice(0, 8)}`,
      config: { embedding_model: MODEL, chunk_size: 128, chunk_overlap: 16 },
    },
    sources: [{ directory: { path: SOURCE_DIR } }],
  });
  assert.equal(created.operation.type, "OPERATION_TYPE_INDEX");
  const collectionId = created.collection.id;

  const updates = await watch(created.operation.id);
  const final = updates.at(-1);
  assert.equal(final.status, "OPERATION_STATUS_COMPLETED", JSON.stringify(final.error));
  assert.equal(Number(final.progress.documents_done), Object.keys(FILES).length);
  assert.ok(final.done);

  const { collection } = await unary(collections, "GetCollection", { collection_id: collectionId });
  assert.equal(collection.status, "COLLECTION_STATUS_READY");

  const found = await unary(search, "Search", {
    collection_id: collectionId,
    query: "baking bread with a fermented starter",
    top_k: 2,
    with_text: true,
  });
  assert.equal(found.hits[0].path, "sourdough.md");
  assert.match(found.hits[0].text, /sourdough/i);
  assert.ok(found.hits[0].score > found.hits.at(-1).score || found.hits.length === 1);
});

test("an error carries google.rpc.Status with an ErrorInfo reason", async () => {
  const missing = randomUUID();
  const error = await unary(collections, "GetCollection", { collection_id: missing }).then(
    () => assert.fail("GetCollection of an unknown id succeeded"),
    (failure) => failure,
  );
  assert.equal(error.code, grpc.status.NOT_FOUND);
  const info = errorInfo(error);
  assert.equal(info.reason, "COLLECTION_NOT_FOUND");
  assert.equal(info.domain, "vectorops.dev");
  assert.equal(info.metadata.collection_id, missing);
});

test("a call without a token is UNAUTHENTICATED", async () => {
  const error = await new Promise((resolve) =>
    collections.ListCollections({}, new grpc.Metadata(), { deadline: deadline(30) }, resolve),
  );
  assert.equal(error?.code, grpc.status.UNAUTHENTICATED);
  assert.equal(errorInfo(error).reason, "UNAUTHENTICATED");
});
