type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Whether applying `v` as a merge-patch value would drop some of it (a null member of an object). */
function hasNullMember(v: Json): boolean {
  return Object.values(v).some((m) => m === null || (isObject(m) && hasNullMember(m)));
}

/**
 * The RFC 7396 merge patch that turns `from` into `to` (both parsed JSON), or undefined when
 * none can: a merge patch cannot set a member to null.
 */
export function mergePatchBetween(from: Json, to: Json): Json | undefined {
  const patch: Json = {};
  for (const key of Object.keys(from)) if (!Object.hasOwn(to, key)) patch[key] = null;
  for (const [key, b] of Object.entries(to)) {
    const a = from[key];
    if (isObject(a) && isObject(b)) {
      const inner = mergePatchBetween(a, b);
      if (inner === undefined) return undefined;
      if (Object.keys(inner).length > 0) patch[key] = inner;
      continue;
    }
    if (Object.hasOwn(from, key) && JSON.stringify(a) === JSON.stringify(b)) continue;
    if (b === null || (isObject(b) && hasNullMember(b))) return undefined;
    patch[key] = b;
  }
  return patch;
}
