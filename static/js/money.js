// An amount of USD as the dashboard says it (core/money.py, the same rule): cents and at
// most 4 decimals ($1.50, $0.0009), a non-zero amount under that grain with its first two
// significant digits ($0.000016, never $0.0000), zero as $0.
window.bonitoUsd = function (value) {
  const n = Number(value);
  if (value === null || value === undefined || value === "" || !Number.isFinite(n)) return "—";
  if (n === 0) return "$0";
  const size = Math.abs(n);
  const places = size >= 0.00005 ? 4 : 1 - Math.floor(Math.log10(size));
  const [whole, decimals = ""] = size.toFixed(places).split(".");
  return (n < 0 ? "-" : "") + "$" + whole + "." + decimals.replace(/0+$/, "").padEnd(2, "0");
};
