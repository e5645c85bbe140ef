{#- RFC 2822 ("Wed, 10 Jan 2018 21:05:30 +0000", BigCommerce v2) to timestamptz.
    The weekday is optional in RFC 2822 and the obsolete zone names GMT/UT mean +0000. -#}
{% macro parse_rfc2822(expression) -%}
    to_timestamp(
        regexp_replace(
            regexp_replace(trim({{ expression }}), '^[A-Za-z]{3},\s*', ''),
            '\s(GMT|UTC|UT|Z)$', ' +0000'
        ),
        'DD Mon YYYY HH24:MI:SS TZHTZM'
    )
{%- endmacro %}

{#- RFC 3339 / ISO 8601 (Square, BigCommerce v3) to timestamptz; a value without an offset is UTC,
    so the result never depends on the session time zone. -#}
{% macro parse_rfc3339(expression) -%}
    case
        when {{ expression }} ~ '(Z|z|[+-]\d\d(:?\d\d)?)$' then ({{ expression }})::timestamptz
        else ({{ expression }})::timestamp at time zone 'UTC'
    end
{%- endmacro %}
