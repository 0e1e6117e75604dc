#include <cmath>

#include "common/error.h"
#include "io/json.h"
#include "model/model.h"

namespace ms {

namespace {

struct Reader {
    const Json &root;
    const std::string &src;

    [[noreturn]] void fail(const std::string &field, const std::string &msg) const {
        throw Error(MS_ERR_FORMAT, src + ": field \"" + field + "\" " + msg);
    }
    const Json *get(const Json &obj, const std::string &field, bool required, const std::string &path) const {
        const Json *v = obj.find(field);
        if (!v && required) fail(path, "is missing");
        return v;
    }
    int integer(const Json &obj, const std::string &field, bool required, int def, int min, const std::string &prefix = "") const {
        const std::string path = prefix + field;
        const Json *v = get(obj, field, required, path);
        if (!v || v->is_null()) return def;
        if (!v->is_integer()) fail(path, "must be an integer");
        double d = v->as_number();
        if (d < min || d > 2147483647.0) fail(path, "must be an integer >= " + std::to_string(min));
        return int(d);
    }
    double number(const Json &obj, const std::string &field, bool required, double def, const std::string &prefix = "") const {
        const std::string path = prefix + field;
        const Json *v = get(obj, field, required, path);
        if (!v || v->is_null()) return def;
        if (!v->is_number()) fail(path, "must be a number");
        return v->as_number();
    }
};

}  // namespace

ModelConfig ModelConfig::parse(const std::string &json_text, const std::string &src) {
    Json root = Json::parse(json_text, src);
    if (!root.is_object()) throw Error(MS_ERR_FORMAT, src + ": not a JSON object");
    Reader r{root, src};
    ModelConfig c;
    if (const Json *mt = root.find("model_type")) {
        if (!mt->is_string()) r.fail("model_type", "must be a string");
        if (mt->as_string() != "gpt_oss")
            throw Error(MS_ERR_UNSUPPORTED, src + ": model_type \"" + mt->as_string() + "\" is not supported (gpt_oss only)");
    }
    c.num_hidden_layers = r.integer(root, "num_hidden_layers", true, 0, 1);
    c.num_local_experts = r.integer(root, "num_local_experts", true, 0, 1);
    c.num_experts_per_tok = r.integer(root, "num_experts_per_tok", false, 4, 1);
    c.hidden_size = r.integer(root, "hidden_size", true, 0, 1);
    c.intermediate_size = r.integer(root, "intermediate_size", true, 0, 1);
    c.num_attention_heads = r.integer(root, "num_attention_heads", true, 0, 1);
    c.num_key_value_heads = r.integer(root, "num_key_value_heads", true, 0, 1);
    c.head_dim = r.integer(root, "head_dim", false, c.hidden_size / c.num_attention_heads, 2);
    c.vocab_size = r.integer(root, "vocab_size", true, 0, 1);
    c.sliding_window = r.integer(root, "sliding_window", false, 0, 0);
    c.rms_norm_eps = r.number(root, "rms_norm_eps", false, 1e-5);
    c.rope_theta = r.number(root, "rope_theta", false, 150000);
    c.swiglu_limit = r.number(root, "swiglu_limit", false, 7.0);
    c.max_position_embeddings = r.integer(root, "max_position_embeddings", false, 131072, 1);

    if (c.num_experts_per_tok > c.num_local_experts) r.fail("num_experts_per_tok", "exceeds num_local_experts");
    if (c.num_attention_heads % c.num_key_value_heads != 0)
        r.fail("num_attention_heads", "must be a multiple of num_key_value_heads");
    if (c.head_dim % 2 != 0) r.fail("head_dim", "must be even");
    if (c.hidden_size % 32 != 0) r.fail("hidden_size", "must be a multiple of 32 (MXFP4 blocks)");
    if (c.intermediate_size % 32 != 0) r.fail("intermediate_size", "must be a multiple of 32 (MXFP4 blocks)");
    if (!(c.rms_norm_eps > 0)) r.fail("rms_norm_eps", "must be > 0");
    if (!(c.rope_theta > 1)) r.fail("rope_theta", "must be > 1");
    if (!(c.swiglu_limit > 0)) r.fail("swiglu_limit", "must be > 0");

    if (const Json *lt = root.find("layer_types"); lt && !lt->is_null()) {
        if (!lt->is_array() || int(lt->items().size()) != c.num_hidden_layers)
            r.fail("layer_types", "must be an array of num_hidden_layers strings");
        for (const Json &t : lt->items()) {
            if (!t.is_string() || (t.as_string() != "sliding_attention" && t.as_string() != "full_attention"))
                r.fail("layer_types", "entries must be \"sliding_attention\" or \"full_attention\"");
            c.layer_types.push_back(t.as_string());
        }
    } else {
        // gpt-oss default: alternating, layer 0 sliding.
        for (int i = 0; i < c.num_hidden_layers; ++i)
            c.layer_types.push_back(c.sliding_window > 0 && i % 2 == 0 ? "sliding_attention" : "full_attention");
    }
    for (int i = 0; i < c.num_hidden_layers; ++i)
        if (c.is_sliding(i) && c.sliding_window <= 0) r.fail("sliding_window", "must be > 0 when layer_types has sliding layers");

    if (const Json *rs = root.find("rope_scaling"); rs && !rs->is_null()) {
        if (!rs->is_object()) r.fail("rope_scaling", "must be an object");
        const Json *type = rs->find("rope_type");
        if (!type) type = rs->find("type");
        if (!type || !type->is_string()) r.fail("rope_scaling.rope_type", "is missing");
        c.rope_type = type->as_string();
        if (c.rope_type != "yarn")
            throw Error(MS_ERR_UNSUPPORTED, src + ": rope_scaling.rope_type \"" + c.rope_type + "\" is not supported (yarn only)");
        c.rope_factor = r.number(*rs, "factor", true, 1, "rope_scaling.");
        c.rope_original_max_position_embeddings = r.number(*rs, "original_max_position_embeddings", true, 4096, "rope_scaling.");
        c.rope_beta_fast = r.number(*rs, "beta_fast", false, 32, "rope_scaling.");
        c.rope_beta_slow = r.number(*rs, "beta_slow", false, 1, "rope_scaling.");
        if (const Json *tr = rs->find("truncate"); tr && tr->is_bool() && tr->as_bool())
            throw Error(MS_ERR_UNSUPPORTED, src + ": rope_scaling.truncate = true is not supported (gpt-oss uses false)");
        if (!(c.rope_factor >= 1)) r.fail("rope_scaling.factor", "must be >= 1");
        if (!(c.rope_original_max_position_embeddings > 0)) r.fail("rope_scaling.original_max_position_embeddings", "must be > 0");
        if (!(c.rope_beta_fast > 0) || !(c.rope_beta_slow > 0)) r.fail("rope_scaling.beta_fast", "and beta_slow must be > 0");
    }

    if (const Json *eos = root.find("eos_token_id"); eos && !eos->is_null()) {
        if (eos->is_integer()) c.eos_token_ids.push_back(int(eos->as_number()));
        else if (eos->is_array()) {
            for (const Json &e : eos->items()) {
                if (!e.is_integer()) r.fail("eos_token_id", "must be an integer or an array of integers");
                c.eos_token_ids.push_back(int(e.as_number()));
            }
        } else r.fail("eos_token_id", "must be an integer or an array of integers");
    }

    if (const Json *q = root.find("quantization_config"); q && !q->is_null()) {
        if (!q->is_object()) r.fail("quantization_config", "must be an object");
        const Json *m = q->find("quant_method");
        if (!m || !m->is_string()) r.fail("quantization_config.quant_method", "is missing");
        c.quant_method = m->as_string();
        if (c.quant_method != "mxfp4")
            throw Error(MS_ERR_UNSUPPORTED,
                        src + ": quantization_config.quant_method \"" + c.quant_method + "\" is not supported (mxfp4 only)");
    } else {
        throw Error(MS_ERR_UNSUPPORTED, src + ": quantization_config is missing; only MXFP4 expert checkpoints are supported");
    }
    return c;
}

}  // namespace ms
