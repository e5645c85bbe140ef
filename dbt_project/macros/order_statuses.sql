{#- BigCommerce order status ids (GET /v2/order_statuses) to their standard names; 'Unknown' for an id
    outside 0–14 (such an order is excluded as `unknown_status`). -#}
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
        else 'Unknown'
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
        when {{ status_id }} in (1, 7, 8, 9, 11, 12) then 'pending'
        else 'unknown'
    end
{%- endmacro %}

{#- A Square payment's status in the CRM's words; a refund outranks the payment's own state, and a
    payment still under way whose order was CANCELED is Cancelled. -#}
{% macro square_payment_status(status, amount_cents, refunded_cents, order_state) -%}
    case
        when {{ refunded_cents }} > 0 and {{ refunded_cents }} >= {{ amount_cents }} then 'Refunded'
        when {{ refunded_cents }} > 0 then 'Partially Refunded'
        when {{ status }} = 'COMPLETED' then 'Completed'
        when {{ status }} in ('APPROVED', 'PENDING') and {{ order_state }} = 'CANCELED' then 'Cancelled'
        when {{ status }} in ('APPROVED', 'PENDING') then 'Pending'
        when {{ status }} = 'CANCELED' then 'Cancelled'
        when {{ status }} = 'FAILED' then 'Failed'
        else 'Unknown'
    end
{%- endmacro %}

{% macro order_status_names() -%}
    {{ return(['Incomplete', 'Pending', 'Shipped', 'Partially Shipped', 'Refunded', 'Cancelled', 'Declined',
               'Awaiting Payment', 'Awaiting Pickup', 'Awaiting Shipment', 'Completed', 'Awaiting Fulfillment',
               'Manual Verification Required', 'Disputed', 'Partially Refunded', 'Failed', 'Unknown']) }}
{%- endmacro %}

{#- Why an order is not synced, in precedence order (int_orders_unioned; crm.excluded_records). -#}
{% macro order_exclusion_reasons() -%}
    {{ return(['archived_order', 'payment_failed', 'payment_canceled', 'unknown_status', 'guest_checkout',
               'invalid_email', 'missing_email', 'unknown_currency', 'invalid_amount', 'invalid_total',
               'invalid_date', 'invalid_line_item']) }}
{%- endmacro %}

{#- Every reason crm.excluded_records may give: the orders' and customers' reasons, and a record the extract
    could not land at all (state.rejected_records). -#}
{% macro excluded_record_reasons() -%}
    {{ return(order_exclusion_reasons() + ['rejected_at_landing']) }}
{%- endmacro %}
