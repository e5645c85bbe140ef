{#- RFC 2822 ("Wed, 10 Jan 2018 21:05:30 +0000", BigCommerce v2) to timestamptz; null when unreadable.
    The weekday is optional in RFC 2822 and the obsolete zone names GMT/UT mean +0000.
    The parser is a function made by create_safe_cast_functions() (macros/safe_casts.sql). -#}
{% macro parse_rfc2822(expression) -%}
    staging.try_parse_rfc2822({{ expression }})
{%- endmacro %}

{#- RFC 3339 / ISO 8601 (Square, BigCommerce v3) to timestamptz; a value without an offset is UTC,
    so the result never depends on the session time zone; null when unreadable. -#}
{% macro parse_rfc3339(expression) -%}
    staging.try_parse_rfc3339({{ expression }})
{%- endmacro %}
