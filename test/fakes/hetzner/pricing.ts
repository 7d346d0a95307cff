import { LOCATIONS, priceIn, SERVER_TYPES } from "./catalog.js";

/**
 * GET /pricing as the API returns it (EUR, 19 % VAT). Server type prices are the catalog's; the rest are plausible
 * figures for tests and demos, not Hetzner's price list. `volumePerGbMonth` is the gross EUR price of a volume's GB
 * per month (tests change it, or make /pricing fail, to see spuff report what the API says and nothing else).
 */
export const PRICING = { volumePerGbMonth: 0.0524, imagePerGbMonth: 0.0143, vat: 0.19 };

const dec = (n: number) => n.toFixed(10);
const price = (gross: number) => ({ net: dec(gross / (1 + PRICING.vat)), gross: dec(gross) });

export function pricingJson(p: { volumePerGbMonth: number } = PRICING) {
  return {
    pricing: {
      currency: "EUR",
      vat_rate: dec(PRICING.vat * 100),
      primary_ips: (["ipv4", "ipv6"] as const).map((type) => ({
        type,
        prices: LOCATIONS.map((l) => ({ location: l.name, price_hourly: price(type === "ipv4" ? 0.001 : 0), price_monthly: price(type === "ipv4" ? 0.6 : 0) })),
      })),
      floating_ips: (["ipv4", "ipv6"] as const).map((type) => ({ type, prices: LOCATIONS.map((l) => ({ location: l.name, price_monthly: price(type === "ipv4" ? 3.57 : 1.19) })) })),
      image: { price_per_gb_month: price(PRICING.imagePerGbMonth) },
      volume: { price_per_gb_month: price(p.volumePerGbMonth) },
      server_backup: { percentage: dec(20) },
      server_types: SERVER_TYPES.map((t) => ({
        id: t.id,
        name: t.name,
        prices: t.sold.map((location) => {
          const gross = priceIn(t, location);
          return {
            location,
            price_hourly: price(gross),
            price_monthly: price(Math.min(gross * 730, gross * 672)),
            included_traffic: 21990232555520,
            price_per_tb_traffic: price(1.19),
          };
        }),
      })),
      load_balancer_types: [],
      floating_ip: { price_monthly: price(3.57) },
    },
  };
}
