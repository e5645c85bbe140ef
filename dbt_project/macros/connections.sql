{#- A deleted connection (state.connections.enabled = false) stops syncing (B11, S9): the crm marts
    leave its records out; what was already pushed stays in the CRM. -#}
{% macro is_enabled_connection(connection_id_column) -%}
    {{ connection_id_column }} not in (
        select connection_id from {{ ref('stg_state__connections') }} where not is_enabled
    )
{%- endmacro %}
