{#- The segment catalogue (G1, B13): every segment of segments.segment_members, one segment() call each
    (macros/segments.sql; docs/analysts.md "Adding a segment"). A list of segment() mappings, read by the
    model and by its incremental pre-hook (which contacts the clock moves, whether the catalogue changed). -#}
{% macro segment_catalogue() -%}
    {%- set segments = [] -%}

    {%- do segments.append(segment(
            'has_opted_in_to_marketing', from='contact_ecommerce_profile',
            where='accepts_marketing', since='min(coalesce(customer_since, first_order_at))')) -%}

    {%- for currency, thresholds in var('segment_revenue_thresholds').items() -%}
        {%- for threshold in thresholds -%}
            {%- do segments.append(segment(
                    'total_revenue_gte_' ~ threshold ~ '_' ~ (currency | lower), from='contact_order_history',
                    where="currency = '" ~ currency ~ "' and running_revenue_cents >= " ~ (threshold * 100),
                    since='min(ordered_at)')) -%}
        {%- endfor -%}
    {%- endfor -%}

    {%- for threshold in var('segment_order_count_thresholds') -%}
        {%- do segments.append(segment(
                'order_count_gte_' ~ threshold, from='contact_order_history',
                where='order_sequence >= ' ~ threshold, since='min(ordered_at)')) -%}
    {%- endfor -%}

    {%- for threshold in var('segment_product_count_thresholds') -%}
        {%- do segments.append(segment(
                'product_count_gte_' ~ threshold, from='contact_order_history',
                where='running_product_count >= ' ~ threshold, since='min(ordered_at)')) -%}
    {%- endfor -%}

    {%- for days in var('segment_last_order_within_days') -%}
        {%- do segments.append(segment(
                'last_order_within_' ~ days ~ '_days', from='contact_ecommerce_profile',
                where='true', within_days=('last_order_at', days), since='min(last_order_at)')) -%}
    {%- endfor -%}

    {%- do segments.append(segment(
            'purchased_product', from='purchased_products', key_suffix='product_external_id',
            where='true', since='min(first_purchased_at)')) -%}

    {%- do segments.append(segment(
            'purchased_category', from='purchased_categories', key_suffix='lower(category_name)',
            where='true', since='min(first_purchased_at)', roll_up_to_all=true)) -%}

    {%- do segments.append(segment(
            'has_abandoned_cart', from='contact_ecommerce_profile',
            where='has_abandoned_cart', since='min(first_abandoned_at)')) -%}

    {%- do segments.append(segment(
            'has_order_status', from='contact_order_history', key_suffix="replace(lower(status), ' ', '_')",
            where='true', since='min(ordered_at)')) -%}

    {%- do segments.append(segment(
            'has_refunded_order', from='contact_order_history',
            where="status in ('Refunded', 'Partially Refunded')", since='min(ordered_at)')) -%}

    {#- An analyst's own segment: repeat buyers active in the last 90 days. -#}
    {%- do segments.append(segment(
            'repeat_buyer_last_90_days', from='contact_ecommerce_profile',
            where='order_count >= 2', within_days=('last_order_at', 90), since='min(last_order_at)')) -%}
    {%- do return(segments) -%}
{%- endmacro %}
