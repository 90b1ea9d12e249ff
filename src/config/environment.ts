import envSchema from 'env-schema';
import { ConfigError } from './config-error.js';
import { ENV_SCHEMA, variables, type EnvVariables } from './schema.js';

type Env = Record<string, string | undefined>;

/** The spellings a boolean variable takes (case-insensitive). */
const BOOLEAN = { true: /^(true|1|yes|on)$/i, false: /^(false|0|no|off)$/i };

type Ajv = ReturnType<Extract<NonNullable<envSchema.EnvSchemaOpt['ajv']>, { customOptions: unknown }>['customOptions']>;
/**
 * env-schema's own Ajv (coercion, defaults, unknown variables dropped) plus the
 * documentation-only keyword `defaultText`; made on the first call and kept, so the schema is
 * compiled once rather than at every call.
 */
let ajv: Ajv | undefined;
const ajvOption = () => ajv ?? { customOptions: (fresh: Ajv) => (ajv = fresh.addKeyword({ keyword: 'defaultText', schemaType: 'string' })) };

/**
 * The variables validated against the schema: each trimmed, an empty value taken as unset,
 * whole numbers in digits only, the boolean spellings turned into booleans; then env-schema
 * checks what is required, ranges and enums, and fills in the defaults. The first bad variable
 * in the schema's order throws a ConfigError naming it. A value is quoted back only for integers,
 * booleans and enums, never for a string (URLs and passwords are strings).
 */
export function readEnvironment(env: Env): EnvVariables {
  const order = variables();
  const problems: Problem[] = [];
  const data: Record<string, string | boolean> = {};
  order.forEach(({ name, schema }, position) => {
    const value = env[name]?.trim();
    if (value === undefined || value === '') return;
    if (schema.type === 'integer' && !/^\d+$/.test(value)) {
      problems.push({ position, error: new ConfigError(name, `must be a whole number, got "${value}"`) });
    } else if (schema.type === 'boolean') {
      const flag = BOOLEAN.true.test(value) ? true : BOOLEAN.false.test(value) ? false : undefined;
      if (flag === undefined) problems.push({ position, error: new ConfigError(name, `must be true or false, got "${value}"`) });
      else data[name] = flag;
    } else {
      data[name] = value;
    }
  });
  let vars: EnvVariables | undefined;
  try {
    vars = envSchema<EnvVariables>({ schema: ENV_SCHEMA, data, env: false, ajv: ajvOption() });
  } catch (err) {
    const errors = (err as { errors?: AjvError[] }).errors;
    if (errors === undefined || errors.length === 0) throw err;
    problems.push(...errors.map((e) => problem(e, order, data)));
  }
  const [first] = problems.sort((a, b) => a.position - b.position);
  if (first !== undefined) throw first.error;
  return vars!;
}

interface Problem {
  /** The variable's place in the schema: the first one is reported. */
  position: number;
  error: ConfigError;
}

/** What env-schema's error carries from Ajv, as far as it is read here. */
interface AjvError {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
  message?: string | undefined;
}

/** One of Ajv's findings as a ConfigError naming the variable. */
function problem(e: AjvError, order: ReturnType<typeof variables>, data: Record<string, string | boolean>): Problem {
  const name = e.keyword === 'required' ? String(e.params.missingProperty) : e.instancePath.slice(1);
  const position = order.findIndex((v) => v.name === name);
  const schema = order[position]?.schema ?? {};
  const value = data[name];
  const text =
    e.keyword === 'required'
      ? 'is required but not set'
      : e.keyword === 'minimum' || e.keyword === 'maximum'
        ? `must be between ${schema.minimum} and ${schema.maximum}, got ${Number(value)}`
        : schema.enum !== undefined
          ? `must be one of ${schema.enum.join(', ')}, got "${String(value)}"`
          : (e.message ?? 'is not valid');
  return { position, error: new ConfigError(name, text) };
}
