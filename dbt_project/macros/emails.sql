{#- Every email is compared as lower(trim(email)); an empty string counts as missing. -#}
{% macro normalize_email(expression) -%}
    nullif(lower(trim({{ expression }})), '')
{%- endmacro %}

{#- 'valid' | 'missing' | 'invalid' for a normalized email. The pattern is deliberately simple:
    one @, a dotted domain, a letter TLD — what the CRM accepts. -#}
{% macro email_status(normalized_email) -%}
    case
        when {{ normalized_email }} is null then 'missing'
        when {{ normalized_email }} ~ '^[a-z0-9._%+''-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$' then 'valid'
        else 'invalid'
    end
{%- endmacro %}
