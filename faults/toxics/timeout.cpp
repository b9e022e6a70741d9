// timeout toxic — placeholder that passes bytes through until the real one lands.
#include "faults/toxics/toxics.h"

namespace faultline::faults::toxics {

namespace {
class Passthrough final : public Toxic {
 public:
  explicit Passthrough(ToxicOutput& out) : out_(out) {}
  void on_data(Chunk chunk) override { out_.push(std::move(chunk)); }
  void on_end() override { out_.end(); }

 private:
  ToxicOutput& out_;
};
}  // namespace

std::unique_ptr<Toxic> make_timeout(const ToxicSpec&, const ToxicContext&, ToxicEnv&, ToxicOutput& out) {
  return std::make_unique<Passthrough>(out);
}

}  // namespace faultline::faults::toxics
