{#- BigCommerce cannot list carts; an incomplete order (status 0) is the listable trace of an abandoned
    checkout (docs/architecture.md). Idle for var('abandoned_cart_after_minutes') it counts as abandoned. -#}
{% macro abandoned_cart_idle() -%}
    interval '{{ var("abandoned_cart_after_minutes") }} minutes'
{%- endmacro %}

{#- An int_orders_enriched row that is, or will be once idle long enough, an abandoned cart. -#}
{% macro is_checkout_left_open() -%}
    is_incomplete
    and exclusion_reason is null
    and {{ is_enabled_connection('connection_id') }}
{%- endmacro %}

{#- When the next open checkout turns abandoned (macros/clock.sql): its last change plus the idle time. -#}
{% macro next_abandoned_cart_at() -%}
    select min(external_updated_at) + {{ abandoned_cart_idle() }}
    from {{ ref('int_orders_enriched') }}
    where {{ is_checkout_left_open() }}
      and external_updated_at > now() - {{ abandoned_cart_idle() }}
{%- endmacro %}
