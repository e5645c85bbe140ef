with

source as (

    {{ raw_rows(source('bigcommerce', 'subscribers')) }}

),

renamed as (

    select
        connection_id,
        pk as subscriber_id,
        {{ normalize_email("payload ->> 'email'") }} as email,
        coalesce(payload -> 'consents' ? 'marketing_newsletter', false) as has_newsletter_consent,
        {{ parse_rfc3339("payload ->> 'date_modified'") }} as updated_at,
        loaded_at

    from source

)

select * from renamed
