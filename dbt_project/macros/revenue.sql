{#- THE REVENUE RULE (issue 13), written once; docs/analysts.md "Revenue" explains it with an example.

    revenue = money actually taken − money given back, never below 0.
    Failed, declined, cancelled, archived and incomplete orders and payments count zero.

    Each source only says which state its order's money is in (`money_state`):
      taken        the money was taken (BigCommerce paid statuses; Square payment COMPLETED)
      being_taken  the payment is under way (BigCommerce 7 Awaiting Payment, 12 Manual Verification
                   Required; Square payment APPROVED or PENDING) — a purchase, but no revenue yet
      none         nothing was taken (0 Incomplete, 1 Pending, 5 Cancelled, 6 Declined; Square CANCELED,
                   FAILED, or an APPROVED/PENDING payment whose order was CANCELED)
    and whether the order is live (`is_live`: not archived). Everything else is these two macros.
    The table of BigCommerce statuses and its sources are in bigcommerce_money_state below. -#}

{#- The order's revenue in minor units: what the CRM receives as totalPrice (crm.ecom_orders) and what
    the segments add up, so the CRM's totals and the warehouse agree. Refunds larger than the gross
    (shipping refunded twice, say) leave 0, not a negative revenue. -#}
{% macro net_revenue_cents(money_state, is_live, gross_cents, refunded_cents) -%}
    (case
        when {{ money_state }} = 'taken' and {{ is_live }}
            then greatest(coalesce({{ gross_cents }}, 0) - coalesce({{ refunded_cents }}, 0), 0)
        else 0
    end)::bigint
{%- endmacro %}

{#- A purchase: a live order whose money was taken or is being taken. Only a purchase may fire the CRM's
    "makes a purchase" automation (crm.ecom_orders.is_purchase, read by the load). -#}
{% macro is_purchase(money_state, is_live) -%}
    coalesce({{ money_state }} in ('taken', 'being_taken') and {{ is_live }}, false)
{%- endmacro %}

{#- BigCommerce status id → money state, from the status descriptions of GET /v2/order_statuses
    (orders.v2.oas2.yml) and guides/orders-index.mdx "Changing order status":
      0 Incomplete                "did not complete the transaction"                 none
      1 Pending                   "started the checkout process, but did not complete it"  none
      2 Shipped, 3 Partially Shipped, 8 Awaiting Pickup, 9 Awaiting Shipment
                                  fulfilment after payment                           taken
      4 Refunded, 14 Partially Refunded
                                  taken, then (partly) given back: the refunds say how much  taken
      5 Cancelled, 6 Declined     cancelled by the seller / payment declined         none
      7 Awaiting Payment          "payment has yet to be confirmed"                  being_taken
      10 Completed                "Client has paid"                                  taken
      11 Awaiting Fulfillment     "payment has been confirmed"                       taken
      12 Manual Verification Required  "on hold while some aspect needs to be manually confirmed"  being_taken
      13 Disputed                 a dispute over "the transaction that paid for the order"  taken
    Any other id is unknown: null here, and the order is excluded as `unknown_status`. -#}
{% macro bigcommerce_money_state(status_id) -%}
    case
        when {{ status_id }} in (2, 3, 4, 8, 9, 10, 11, 13, 14) then 'taken'
        when {{ status_id }} in (7, 12) then 'being_taken'
        when {{ status_id }} in (0, 1, 5, 6) then 'none'
    end
{%- endmacro %}

{#- Square payment status (api.json Payment.status) → money state: only COMPLETED money was taken;
    APPROVED/PENDING is being taken unless its order was CANCELED; CANCELED and FAILED took nothing.
    An unknown status is null (excluded as `unknown_status`). -#}
{% macro square_money_state(payment_status, order_state) -%}
    case
        when {{ payment_status }} = 'COMPLETED' then 'taken'
        when {{ payment_status }} in ('APPROVED', 'PENDING') and {{ order_state }} is distinct from 'CANCELED'
            then 'being_taken'
        when {{ payment_status }} in ('APPROVED', 'PENDING', 'CANCELED', 'FAILED') then 'none'
    end
{%- endmacro %}
