/** What a namespace (tenant) may do; defaults come from the environment. */
export interface NamespacePolicy {
  idleTimeoutDefault: number;
  idleTimeoutMax: number;
  absoluteTimeoutDefault: number;
  absoluteTimeoutMax: number;
  /** Live sessions one subject may hold; creating one more revokes the least recently used. 0 = no cap. */
  maxSessionsPerSubject: number;
  /** Requests a client of this namespace may make per window. max 0 = no limit. */
  rateLimit: { max: number; windowSeconds: number };
  /** Sessions may be created under a token the app supplies (PUT /v1/sessions/current). */
  clientTokens: boolean;
}

/** Per-namespace overrides as written in the keys file. */
export type PolicyOverrides = Partial<Omit<NamespacePolicy, 'rateLimit'>> & { rateLimit?: Partial<NamespacePolicy['rateLimit']> };

export class NamespacePolicies {
  private readonly resolved = new Map<string, NamespacePolicy>();

  constructor(
    readonly defaults: NamespacePolicy,
    overrides: Record<string, PolicyOverrides> = {},
  ) {
    for (const [namespace, o] of Object.entries(overrides)) {
      const policy: NamespacePolicy = { ...defaults, ...o, rateLimit: { ...defaults.rateLimit, ...o.rateLimit } };
      this.resolved.set(namespace, policy);
    }
  }

  /** Every namespace with overrides, as resolved. */
  overridden(): IterableIterator<[string, NamespacePolicy]> {
    return this.resolved.entries();
  }

  for(namespace: string): NamespacePolicy {
    return this.resolved.get(namespace) ?? this.defaults;
  }
}
