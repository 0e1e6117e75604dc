// JSON Schema → the TypeScript-like type text that gpt-oss saw in training for tool parameters
// (`type get_weather = (_: { location: string, … }) => any;`). The layout (indents, comment placement, `oneOf`
// variants on their own lines) follows the reference harmony renderer exactly, because every byte is a prompt token.

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Schema = { [key: string]: Json };

function isObject(value: Json | undefined): value is Schema {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isEnum(schema: Schema): boolean {
  return Array.isArray(schema.enum) && schema.enum.length > 0;
}

/** `// default: …` text: strings are quoted unless the schema is an enum; other values are JSON. */
function defaultComment(schema: Schema, value: Json): string {
  if (typeof value === 'string') return isEnum(schema) ? `default: ${value}` : `default: "${value}"`;
  return `default: ${JSON.stringify(value)}`;
}

function withNullable(variant: Json, typeText: string): string {
  return isObject(variant) && variant.nullable === true && !typeText.includes('null') ? `${typeText} | null` : typeText;
}

export function schemaToTypeScript(schemaValue: Json, indent: string): string {
  if (!isObject(schemaValue)) return 'any';
  const schema = schemaValue;
  const oneOf = schema.oneOf;
  if (Array.isArray(oneOf)) {
    let out = '';
    oneOf.forEach((variant, i) => {
      out += i === 0 ? `\n${indent} | ` : `\n${indent} | `;
      out += withNullable(variant, schemaToTypeScript(variant, `${indent}   `));
      const comments: string[] = [];
      if (isObject(variant)) {
        if (typeof variant.description === 'string') comments.push(variant.description);
        if (variant.default !== undefined) comments.push(defaultComment(variant, variant.default));
      }
      if (comments.length > 0) out += ` // ${comments.join(' ')}`;
    });
    return out;
  }
  const type = schema.type;
  if (Array.isArray(type)) {
    const names = type.filter((t): t is string => typeof t === 'string').map((t) => (t === 'integer' ? 'number' : t));
    if (names.length > 0) return names.join(' | ');
  }
  if (typeof type !== 'string') return 'any';
  switch (type) {
    case 'object':
      return objectToTypeScript(schema, indent);
    case 'string': {
      const values = Array.isArray(schema.enum) ? schema.enum.filter((v): v is string => typeof v === 'string') : [];
      return values.length > 0 ? values.map((v) => `"${v}"`).join(' | ') : 'string';
    }
    case 'number':
    case 'integer':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'array':
      return schema.items !== undefined ? `${schemaToTypeScript(schema.items, indent)}[]` : 'Array<any>';
    default:
      return 'any';
  }
}

function objectToTypeScript(schema: Schema, indent: string): string {
  let out = '';
  if (typeof schema.description === 'string') out += `${indent}// ${schema.description}\n`;
  out += '{\n';
  const properties = schema.properties;
  if (isObject(properties)) {
    const required = new Set(
      Array.isArray(schema.required) ? schema.required.filter((r): r is string => typeof r === 'string') : [],
    );
    for (const [key, value] of Object.entries(properties)) {
      const prop: Schema = isObject(value) ? value : {};
      const optional = required.has(key) ? '' : '?';
      if (typeof prop.title === 'string') out += `${indent}// ${prop.title}\n${indent}//\n`;
      const oneOf = prop.oneOf;
      if (!Array.isArray(oneOf) && typeof prop.description === 'string') out += `${indent}// ${prop.description}\n`;
      if (Array.isArray(prop.examples) && prop.examples.length > 0) {
        out += `${indent}// Examples:\n`;
        for (const example of prop.examples) if (typeof example === 'string') out += `${indent}// - "${example}"\n`;
      }
      if (Array.isArray(oneOf)) {
        out += propertyOneOf(prop, oneOf, key + optional, indent);
        continue;
      }
      out += `${indent}${key}${optional}: `;
      out += withNullable(prop, schemaToTypeScript(prop, `${indent}    `));
      out += ',';
      if (prop.default !== undefined) out += ` // ${defaultComment(prop, prop.default)}`;
      out += '\n';
    }
  }
  out += `${indent}}`;
  return out;
}

function propertyOneOf(prop: Schema, variants: Json[], name: string, indent: string): string {
  let out = '';
  const propertyDesc = typeof prop.description === 'string' ? prop.description : undefined;
  const first = variants[0];
  const skipPropertyDesc =
    propertyDesc !== undefined && isObject(first) && typeof first.description === 'string'
      ? first.description === propertyDesc
      : false;
  let descAbove = false;
  if (!skipPropertyDesc && propertyDesc !== undefined) {
    out += `${indent}// ${propertyDesc}\n`;
    descAbove = true;
  }
  if (prop.default !== undefined) out += `${indent}// ${defaultComment(prop, prop.default)}\n`;
  out += `${indent}${name}:\n`;
  variants.forEach((variant, i) => {
    out += `${indent} | `;
    out += withNullable(variant, schemaToTypeScript(variant, `${indent}   `));
    const comments: string[] = [];
    if (isObject(variant)) {
      if (!(i === 0 && descAbove) && typeof variant.description === 'string' && variant.description !== propertyDesc) {
        comments.push(variant.description);
      }
      if (variant.default !== undefined) comments.push(defaultComment(variant, variant.default));
    }
    if (comments.length > 0) out += ` // ${comments.join(' ')}`;
    out += '\n';
  });
  out += `${indent},\n`;
  return out;
}

export type { Json, Schema };
