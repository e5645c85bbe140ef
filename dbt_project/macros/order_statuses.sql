{#- BigCommerce order status ids (GET /v2/order_statuses) to their standard names. -#}
{% macro bigcommerce_status_name(status_id) -%}
    case {{ status_id }}
        when 0 then 'Incomplete'
        when 1 then 'Pending'
        when 2 then 'Shipped'
        when 3 then 'Partially Shipped'
        when 4 then 'Refunded'
        when 5 then 'Cancelled'
        when 6 then 'Declined'
        when 7 then 'Awaiting Payment'
        when 8 then 'Awaiting Pickup'
        when 9 then 'Awaiting Shipment'
        when 10 then 'Completed'
        when 11 then 'Awaiting Fulfillment'
        when 12 then 'Manual Verification Required'
        when 13 then 'Disputed'
        when 14 then 'Partially Refunded'
    end
{%- endmacro %}

{#- The source-independent status family segments filter on. -#}
{% macro bigcommerce_status_group(status_id) -%}
    case
        when {{ status_id }} = 0 then 'incomplete'
        when {{ status_id }} in (2, 3, 10) then 'completed'
        when {{ status_id }} = 4 then 'refunded'
        when {{ status_id }} = 14 then 'partially_refunded'
        when {{ status_id }} = 5 then 'cancelled'
        when {{ status_id }} = 6 then 'failed'
        when {{ status_id }} = 13 then 'disputed'
        else 'pending'
    end
{%- endmacro %}

{#- A Square payment's status in the CRM's words; a refund outranks the payment's own state. -#}
{% macro square_payment_status(payments) -%}
    case
        when {{ payments }}.refunded_cents > 0 and {{ payments }}.refunded_cents >= {{ payments }}.amount_cents then 'Refunded'
        when {{ payments }}.refunded_cents > 0 then 'Partially Refunded'
        when {{ payments }}.status = 'COMPLETED' then 'Completed'
        when {{ payments }}.status in ('APPROVED', 'PENDING') then 'Pending'
        when {{ payments }}.status = 'CANCELED' then 'Cancelled'
        when {{ payments }}.status = 'FAILED' then 'Failed'
    end
{%- endmacro %}

{% macro order_status_names() -%}
    {{ return(['Incomplete', 'Pending', 'Shipped', 'Partially Shipped', 'Refunded', 'Cancelled', 'Declined',
               'Awaiting Payment', 'Awaiting Pickup', 'Awaiting Shipment', 'Completed', 'Awaiting Fulfillment',
               'Manual Verification Required', 'Disputed', 'Partially Refunded', 'Failed']) }}
{%- endmacro %}
