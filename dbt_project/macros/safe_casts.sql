{#- Safe casts (issue 15): a payload field that is not what the API documents becomes null, never a failed
    build. Staging keeps the raw text beside the typed value where the CRM needs the field, so a value that
    was sent but could not be read (`is_unreadable`) becomes an exclusion reason in crm.excluded_records
    (`invalid_amount`, `invalid_date`, `unknown_status`, …); a field the CRM does not need just stays null.

    Numbers are validated by pattern before the cast, so the cast itself cannot fail. JSON numbers arrive
    as plain decimal text (jsonb never prints an exponent), so the pattern needs no exponent form. -#}

{#- Decimal text (money, quantities) to numeric; at most 11 integer digits (99 billion), so an amount
    in minor units (x 10^4 at most) and its sum over 10,000 lines still fit a bigint. -#}
{% macro safe_numeric(expression) -%}
    (case when ({{ expression }})::text ~ '^\s*[+-]?(\d{1,11}(\.\d*)?|\.\d+)\s*$' then ({{ expression }})::text::numeric end)
{%- endmacro %}

{#- Whole numbers: bigint (Square money in minor units) and integer (ids, status ids, quantities). -#}
{% macro safe_bigint(expression) -%}
    (case when ({{ expression }}) ~ '^\s*[+-]?\d{1,18}\s*$' then ({{ expression }})::bigint end)
{%- endmacro %}

{% macro safe_integer(expression) -%}
    (case when ({{ expression }}) ~ '^\s*[+-]?\d{1,9}\s*$' then ({{ expression }})::integer end)
{%- endmacro %}

{#- JSON true/false (also as the strings "true"/"false"); anything else is null. -#}
{% macro safe_boolean(expression) -%}
    (case lower(trim({{ expression }})) when 'true' then true when 'false' then false end)
{%- endmacro %}

{#- A field that was sent (not null, not an empty JSON value) but whose typed value is null. -#}
{% macro is_unreadable(raw_expression, typed_expression) -%}
    ({{ raw_expression }} is not null and {{ typed_expression }} is null)
{%- endmacro %}

{#- The timestamp parsers are SQL functions because only PL/pgSQL can catch the errors of a value that
    has the right shape but no calendar meaning ("31 Feb", hour 25). Created by on-run-start in the
    staging schema, before any model reads them. PARALLEL UNSAFE: the EXCEPTION block opens a
    subtransaction, which Postgres refuses inside a parallel query ("cannot start subtransactions during
    a parallel operation"), and an order filter that reaches the raw tables makes parallel plans likely. A date outside 1970 … 2199 is treated as unreadable:
    no order of these stores is older than 1970, and the CRM stores dates in that range. -#}
{% macro create_safe_cast_functions() -%}
    do $outer$
    begin
        perform pg_advisory_xact_lock(hashtext('ecomsync.safe_cast_functions'));
        create schema if not exists staging;

        -- Both are PARALLEL UNSAFE: their EXCEPTION block opens a subtransaction, which Postgres refuses inside a
        -- parallel plan ("cannot start subtransactions during a parallel operation"; seen at bench scale).
        -- RFC 3339 / ISO 8601 (Square, BigCommerce v3); a value without an offset is UTC.
        create or replace function staging.try_parse_rfc3339(value text) returns timestamptz
        language plpgsql stable parallel unsafe as $fn$
        declare
            parsed timestamptz;
        begin
            if value is null or value !~ '^\s*\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?\s*([Zz]|[+-]\d{2}(:?\d{2})?)?)?\s*$' then
                return null;
            end if;
            if value ~ '\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*([Zz]|[+-]\d{2}(:?\d{2})?)\s*$' then
                parsed := value::timestamptz;
            else
                parsed := value::timestamp at time zone 'UTC';
            end if;
            if parsed < '1970-01-01 00:00:00+00' or parsed >= '2200-01-01 00:00:00+00' then
                return null;
            end if;
            return parsed;
        exception when others then
            return null;
        end
        $fn$;

        -- RFC 2822 ("Wed, 10 Jan 2018 21:05:30 +0000", BigCommerce v2): the weekday is optional and the
        -- obsolete zone names GMT/UT/UTC/Z mean +0000.
        create or replace function staging.try_parse_rfc2822(value text) returns timestamptz
        language plpgsql stable parallel unsafe as $fn$
        declare
            parsed timestamptz;
        begin
            if value is null or value !~ '^\s*([A-Za-z]{3},\s*)?\d{1,2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2}\s+([+-]\d{4}|GMT|UTC|UT|Z)\s*$' then
                return null;
            end if;
            parsed := to_timestamp(
                regexp_replace(
                    regexp_replace(trim(value), '^[A-Za-z]{3},\s*', ''),
                    '\s+(GMT|UTC|UT|Z)$', ' +0000'
                ),
                'DD Mon YYYY HH24:MI:SS TZHTZM'
            );
            if parsed < '1970-01-01 00:00:00+00' or parsed >= '2200-01-01 00:00:00+00' then
                return null;
            end if;
            return parsed;
        exception when others then
            return null;
        end
        $fn$;
    end
    $outer$;
{%- endmacro %}
