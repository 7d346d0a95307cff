/**
 * What the fake sells: locations, server types (with per-location prices and availability) and images, shaped as the
 * live API returns them. Prices are plausible EUR figures for tests and demos, not Hetzner's price list.
 */

export interface FakeLocation {
  id: number;
  name: string;
  description: string;
  country: string;
  city: string;
  latitude: number;
  longitude: number;
  network_zone: string;
}

export const LOCATIONS: FakeLocation[] = [
  { id: 1, name: "fsn1", description: "Falkenstein DC Park 1", country: "DE", city: "Falkenstein", latitude: 50.47612, longitude: 12.370071, network_zone: "eu-central" },
  { id: 2, name: "nbg1", description: "Nuremberg DC Park 1", country: "DE", city: "Nuremberg", latitude: 49.452102, longitude: 11.076665, network_zone: "eu-central" },
  { id: 3, name: "hel1", description: "Helsinki DC Park 1", country: "FI", city: "Helsinki", latitude: 60.169855, longitude: 24.938379, network_zone: "eu-central" },
  { id: 4, name: "ash", description: "Ashburn, VA", country: "US", city: "Ashburn, VA", latitude: 39.045821, longitude: -77.487073, network_zone: "us-east" },
  { id: 5, name: "hil", description: "Hillsboro, OR", country: "US", city: "Hillsboro, OR", latitude: 45.54222, longitude: -122.951924, network_zone: "us-west" },
  { id: 6, name: "sin", description: "Singapore", country: "SG", city: "Singapore", latitude: 1.283333, longitude: 103.833333, network_zone: "ap-southeast" },
];

export interface FakeServerType {
  id: number;
  name: string;
  cores: number;
  memory: number;
  disk: number;
  cpu: "shared" | "dedicated";
  arch: "x86" | "arm";
  /** Gross hourly price in EUR where it is sold (EU locations; other regions +20 %). */
  hourly: number;
  /** Locations where it can be created. */
  sold: string[];
  deprecated?: { announced: string; unavailable_after: string };
}

const EU = ["fsn1", "nbg1", "hel1"];
const ALL = LOCATIONS.map((l) => l.name);

export const SERVER_TYPES: FakeServerType[] = [
  { id: 1, name: "cx22", cores: 2, memory: 4, disk: 40, cpu: "shared", arch: "x86", hourly: 0.0071, sold: EU },
  { id: 2, name: "cx32", cores: 4, memory: 8, disk: 80, cpu: "shared", arch: "x86", hourly: 0.0127, sold: EU },
  { id: 3, name: "cx42", cores: 8, memory: 16, disk: 160, cpu: "shared", arch: "x86", hourly: 0.0302, sold: EU },
  { id: 4, name: "cpx11", cores: 2, memory: 2, disk: 40, cpu: "shared", arch: "x86", hourly: 0.0076, sold: ALL.filter((l) => l !== "sin") },
  { id: 5, name: "cpx21", cores: 3, memory: 4, disk: 80, cpu: "shared", arch: "x86", hourly: 0.0136, sold: ALL },
  { id: 6, name: "cax11", cores: 2, memory: 4, disk: 40, cpu: "shared", arch: "arm", hourly: 0.0071, sold: ["fsn1", "nbg1", "hel1"] },
  { id: 7, name: "ccx13", cores: 2, memory: 8, disk: 80, cpu: "dedicated", arch: "x86", hourly: 0.0232, sold: ALL },
  {
    id: 8,
    name: "cx11",
    cores: 1,
    memory: 2,
    disk: 20,
    cpu: "shared",
    arch: "x86",
    hourly: 0.0062,
    sold: ["fsn1"],
    deprecated: { announced: "2026-06-01T00:00:00+00:00", unavailable_after: "2027-06-01T00:00:00+00:00" },
  },
];

export interface FakeImage {
  id: number;
  name: string;
  description: string;
  os_flavor: "debian" | "ubuntu";
  os_version: string;
}

export const IMAGES: FakeImage[] = [
  { id: 114690387, name: "debian-12", description: "Debian 12", os_flavor: "debian", os_version: "12" },
  { id: 114690388, name: "debian-13", description: "Debian 13", os_flavor: "debian", os_version: "13" },
  { id: 161547269, name: "ubuntu-24.04", description: "Ubuntu 24.04", os_flavor: "ubuntu", os_version: "24.04" },
];

const EUR = (n: number) => n.toFixed(10);

export function priceIn(t: FakeServerType, location: string): number {
  const l = LOCATIONS.find((x) => x.name === location);
  return l && l.network_zone !== "eu-central" ? Math.round(t.hourly * 1.2 * 10000) / 10000 : t.hourly;
}

/** A server type as the API returns it; `unavailable` lists type@location pairs a test switched off. */
export function serverTypeJson(t: FakeServerType, unavailable: ReadonlySet<string>) {
  return {
    id: t.id,
    name: t.name,
    description: t.name.toUpperCase(),
    category: t.cpu === "dedicated" ? "dedicated_cpu" : "cost_optimized",
    cores: t.cores,
    memory: t.memory,
    disk: t.disk,
    deprecated: Boolean(t.deprecated),
    deprecation: t.deprecated ?? null,
    prices: t.sold.map((location) => {
      const gross = priceIn(t, location);
      return {
        location,
        price_hourly: { net: EUR(gross / 1.19), gross: EUR(gross) },
        price_monthly: { net: EUR(Math.min(gross * 730, gross * 672) / 1.19), gross: EUR(Math.min(gross * 730, gross * 672)) },
        included_traffic: 21990232555520,
        price_per_tb_traffic: { net: EUR(1), gross: EUR(1.19) },
      };
    }),
    storage_type: "local" as const,
    cpu_type: t.cpu,
    architecture: t.arch,
    locations: LOCATIONS.filter((l) => t.sold.includes(l.name)).map((l) => {
      const available = !unavailable.has(`${t.name}@${l.name}`);
      return { id: l.id, name: l.name, deprecation: t.deprecated ?? null, available, recommended: available && !t.deprecated };
    }),
  };
}

export function imageJson(i: FakeImage, arch: "x86" | "arm") {
  return {
    id: i.id,
    type: "system" as const,
    status: "available" as const,
    name: i.name,
    description: i.description,
    image_size: null,
    disk_size: 5,
    created: "2026-01-01T00:00:00+00:00",
    created_from: null,
    bound_to: null,
    os_flavor: i.os_flavor,
    os_version: i.os_version,
    rapid_deploy: true,
    protection: { delete: false },
    deprecated: null,
    deleted: null,
    labels: {},
    architecture: arch,
  };
}
