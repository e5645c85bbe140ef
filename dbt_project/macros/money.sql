{#- Decimal money (BigCommerce's "336.3200" strings, or JSON numbers) to integer minor units of its
    currency: cents for USD or EUR, yen for JPY (no minor unit), fils for KWD (three digits) — the unit
    Square amounts and the CRM's money fields use. Goes through numeric, never float, so
    "0.1000" + "0.2000" USD is exactly 30; more decimals than the currency has are rounded half away
    from zero ("19.99999" USD is 2000). Text that is not a decimal number gives null (safe_numeric), so
    callers can tell "not sent" from "unreadable". Columns holding the result are named `*_cents`. -#}
{% macro to_minor_units(expression, currency_expression) -%}
    (round({{ safe_numeric(expression) }} * power(10::numeric, {{ currency_exponent(currency_expression) }})))::bigint
{%- endmacro %}

{#- ISO 4217 minor-unit digits; every code not listed has two. -#}
{% macro currency_exponent(currency_expression) -%}
    case
        when upper({{ currency_expression }}) in (
            'BIF', 'CLP', 'DJF', 'GNF', 'ISK', 'JPY', 'KMF', 'KRW', 'PYG', 'RWF', 'UGX', 'UYI', 'VND', 'VUV',
            'XAF', 'XOF', 'XPF'
        ) then 0
        when upper({{ currency_expression }}) in ('BHD', 'IQD', 'JOD', 'KWD', 'LYD', 'OMR', 'TND') then 3
        when upper({{ currency_expression }}) in ('CLF', 'UYW') then 4
        else 2
    end
{%- endmacro %}

{#- The ISO 4217 currency codes in circulation: the CRM takes an order's currency as one of these. -#}
{% macro iso_4217_currency_codes() -%}
    {{ return((
        "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD "
        "CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP "
        "GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW "
        "KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN "
        "NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL "
        "SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES "
        "VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL"
    ).split()) }}
{%- endmacro %}

{#- True when an order's currency is a known ISO 4217 code (null = missing = not known). -#}
{% macro is_known_currency(expression) -%}
    coalesce({{ expression }} in ('{{ iso_4217_currency_codes() | join("', '") }}'), false)
{%- endmacro %}
