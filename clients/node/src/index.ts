export { createClient, SessiondClient } from './client.js';
export type {
  CallOptions,
  ClientOptions,
  CreateSessionInput,
  IssuedSession,
  Reply,
  RequestSpec,
  RotateInput,
  Session,
  SessionData,
  SessionMetadata,
  SubjectSessionPage,
  TouchBatchResult,
} from './client.js';
export { SessiondError } from './errors.js';
export type { Problem, SessiondErrorCode } from './errors.js';
export { SessiondStore, STATE_FIELD } from './store.js';
export type { SessiondStoreConfig, SessiondStoreOptions, StoredSession } from './store.js';
export type { components, operations, paths } from './sessiond-api.js';
